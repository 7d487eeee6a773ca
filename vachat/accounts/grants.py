"""Default grants: a plugin's ``Permission(name, grant_to=("user",))`` reaches those roles once.

At start-up, every declared permission this database has not seen yet is recorded in
``seen_permissions`` and added to the roles its ``grant_to`` names, in one transaction. A
permission already seen is never granted again, so an operator who revoked it (``vachat roles
revoke``, the admin API) keeps it revoked across restarts and upgrades. Two nodes starting
together on one database cannot both apply it: the row is the claim (its primary key is the
name), and only the node whose insert succeeds grants.

Rules: a role named in ``grant_to`` that does not exist is skipped and logged (create the role,
then grant by hand); ``*`` is never granted this way.
"""

from __future__ import annotations

import logging
from typing import Mapping

import peewee

from ..db import database, now
from .models import Role, SeenPermission

__all__ = ["apply_default_grants"]

log = logging.getLogger("vachat.accounts")


def apply_default_grants(declared: Mapping[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """Record the permissions in ``declared`` (name → roles) not seen before and grant them to
    their roles (synchronous; run on a database thread). Returns role name → permissions added."""
    seen = {row.id for row in SeenPermission.select(SeenPermission.id)}
    added: dict[str, list[str]] = {}
    for name, roles in sorted(declared.items()):
        if name in seen:
            continue
        try:
            with database.atomic():
                SeenPermission.create(id=name, seen_at=now())
                for role_name in roles:
                    if _grant(role_name, name):
                        added.setdefault(role_name, []).append(name)
        except peewee.IntegrityError:  # another node saw it first and granted it
            continue
    return added


def _grant(role_name: str, permission: str) -> bool:
    role = Role.get_or_none(Role.name == role_name)
    if role is None:
        log.warning("a default grant names a role that does not exist; skipped",
                    extra={"role": role_name, "permission": permission})
        return False
    held = role.permission_set()
    if permission in held or "*" in held:
        return False
    Role.update(permissions=sorted(held | {permission}), updated_at=now()).where(Role.id == role.id).execute()
    return True
