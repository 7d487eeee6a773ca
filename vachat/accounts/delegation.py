"""Delegated administration never escalates: the one rule every change of a user's role, tier,
active flag or existence, and of a role's permissions, passes.

- Nobody changes their own role, tier, or the permissions of the role they hold.
- A role is given, and a permission added to a role, only by someone who holds every
  permission it grants (``*`` only by a holder of ``*``).
- An account (or a role) whose permissions exceed the actor's cannot be changed, disabled or
  deleted by them.

The actor is a ``Delegate``: the caller's id, the permissions it acts with (an API key's may be
fewer than its owner's), and its role. ``None`` is the operator at the console (``vachat users
…``, ``create-admin``): whoever can run those already holds the database, so no rule applies.

The checks run inside the transaction that makes the change (``management``), against the
target's permissions as stored there, so a concurrent role change cannot slip between the
check and the write. A refusal is ``EscalationRefused`` (403 ``FORBIDDEN``), which the accounts
service audits as ``access.escalation_refused``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..errors import Forbidden

__all__ = ["Delegate", "EscalationRefused", "SUPERUSER_PERMISSION", "check_user_change", "check_role_grant",
           "check_role_change"]

#: The permission that grants every other one.
SUPERUSER_PERMISSION = "*"


class EscalationRefused(Forbidden):
    """A change that would give someone more than the actor holds."""


@dataclass(frozen=True)
class Delegate:
    """Who makes an administrative change, with what (see the module docstring)."""

    id: str
    permissions: frozenset[str]
    role: str | None = None

    def covers(self, granted: Iterable[str]) -> bool:
        """Whether this actor holds every permission in ``granted`` (``*`` only through ``*``)."""
        if SUPERUSER_PERMISSION in self.permissions:
            return True
        return all(name != SUPERUSER_PERMISSION and name in self.permissions for name in granted)


def check_user_change(delegate: Delegate | None, *, user_id: str, user_permissions: Iterable[str],
                      self_sensitive: bool = False, new_role_permissions: Iterable[str] | None = None) -> None:
    """Refuse a change of account ``user_id`` (holding ``user_permissions``) by ``delegate``.

    ``self_sensitive``: the change touches the role or tier (nobody changes their own).
    ``new_role_permissions``: what a newly given role grants (the actor must hold it all).
    """
    if delegate is None:
        return
    if self_sensitive and user_id == delegate.id:
        raise EscalationRefused("You cannot change your own role or tier")
    if not delegate.covers(user_permissions):
        raise EscalationRefused("This account holds permissions you do not have")
    if new_role_permissions is not None and not delegate.covers(new_role_permissions):
        raise EscalationRefused("You cannot give a role with permissions you do not hold")


def check_role_grant(delegate: Delegate | None, permissions: Iterable[str]) -> None:
    """Refuse a new role granting what ``delegate`` does not hold."""
    if delegate is not None and not delegate.covers(permissions):
        raise EscalationRefused("You cannot create a role with permissions you do not hold")


def check_role_change(delegate: Delegate | None, *, role_name: str, current: Iterable[str],
                      wanted: Iterable[str]) -> None:
    """Refuse changing role ``role_name``'s permissions from ``current`` to ``wanted``."""
    if delegate is None:
        return
    if role_name == delegate.role:
        raise EscalationRefused("You cannot change the permissions of your own role")
    if not delegate.covers(current):
        raise EscalationRefused("This role holds permissions you do not have")
    if not delegate.covers(set(wanted) - set(current)):
        raise EscalationRefused("You cannot add permissions you do not hold")
