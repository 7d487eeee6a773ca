"""The accounts service that plugins use (``app.accounts``; ``vachat.interfaces.Accounts``).

Plugins never import ``vachat.accounts``: they reach users, sessions and the audit log through
this object, which the accounts plugin publishes as the service ``"accounts"``. Each method
delegates to the module that owns the behaviour, so the REST handlers and plugins share one
code path (revocations close sockets on every node, audit rows look the same).

The management methods (listing, changing and deleting users, roles, the audit-log query)
are what an administration plugin needs; the queries live in ``management``, and this class
adds what must follow a committed change: cache invalidation, ended sessions and closed
sockets, the deletion hook, and the audit row (with the acting user, address and user agent
of ``request``, a REST handler or WebSocket event context).

Every change made on someone's behalf (``actor_id``, or ``request``'s caller) passes the
delegation rule (``delegation``: nobody escalates); a refusal is audited as
``access.escalation_refused`` and raised (403). A change with neither is the operator's.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable

from ..db import now
from ..errors import ApiError
from . import audit as audit_log
from . import management, sessions
from .delegation import Delegate, EscalationRefused
from .models import Role, User
from .principal import CLOSE_SESSION_ENDED

__all__ = ["AccountsService"]


class AccountsService:
    def __init__(self, app: Any) -> None:
        self._app = app

    async def get_user(self, user_id: str) -> dict[str, Any] | None:
        user = await self._app.db.run(User.get_or_none, User.id == user_id)
        return user.to_wire() if user is not None else None

    async def get_users(self, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return {}
        users = await self._app.db.run(lambda: list(User.select().where(User.id.in_(wanted))))
        return {user.id: user.to_wire() for user in users}

    async def set_user_active(self, user_id: str, active: bool, *, actor_id: str | None = None,
                              request: Any = None) -> bool:
        changed = await self._change_user(user_id, {"is_active": active}, actor_id=actor_id, request=request)
        return changed is not None and changed[0]["isActive"] != changed[1]["isActive"]

    async def set_avatar_url(self, user_id: str, url: str | None) -> bool:
        def write() -> int:
            return User.update(avatar_url=url, updated_at=now()).where(User.id == user_id).execute()

        changed = bool(await self._app.db.run(write))
        if changed:
            await sessions.invalidate_user(self._app, user_id)
        return changed

    async def end_sessions(self, user_id: str, *, reason: str = "ended") -> int:
        ended = await sessions.revoke_user_sessions(self._app, user_id, reason=reason)
        await self._app.hub.disconnect(user_id=user_id, code=CLOSE_SESSION_ENDED, reason="Signed out")
        return ended

    async def invalidate_user(self, user_id: str) -> None:
        await sessions.invalidate_user(self._app, user_id)

    async def invalidate_role(self, role_name: str) -> None:
        await sessions.invalidate_role(self._app, role_name)

    async def audit(self, action: str, *, user_id: str | None = None, actor_id: str | None = None,
                    request: Any = None, details: dict[str, Any] | None = None) -> None:
        await audit_log.audit(self._app, request, action, user_id=user_id, actor_id=actor_id, details=details)

    # -- management (administration plugins) ------------------------------------------

    async def get_user_by_email(self, email: str) -> dict[str, Any] | None:
        user_id = await self._app.db.run(management.find_user_id_by_email, email)
        return await self.get_user(user_id) if user_id is not None else None

    async def list_users(self, *, page: int = 1, limit: int = 20, search: str | None = None,
                         role: str | None = None, active: bool | None = None, tier: str | None = None,
                         sort_by: str = "createdAt", sort_order: str = "desc") -> tuple[list[dict[str, Any]], int]:
        return await self._app.db.run(lambda: management.list_users(
            page=page, limit=limit, search=search, role=role, active=active, tier=tier,
            sort_by=sort_by, sort_order=sort_order))

    async def update_user(self, user_id: str, *, role: str | None = None, tier: str | None = None,
                          is_active: bool | None = None, is_email_verified: bool | None = None,
                          actor_id: str | None = None, request: Any = None) -> dict[str, Any] | None:
        fields = {"role": role, "tier": tier, "is_active": is_active, "is_email_verified": is_email_verified}
        changed = await self._change_user(user_id, {k: v for k, v in fields.items() if v is not None},
                                          actor_id=actor_id, request=request)
        return changed[1] if changed is not None else None

    async def _delegate(self, actor_id: str | None, request: Any) -> Delegate | None:
        """Who acts, with the permissions it acts with: ``request``'s caller (an API key's
        narrower set included), else ``actor_id``'s role as stored, else None (the operator)."""
        actor = getattr(request, "actor", None)
        if actor is not None and actor_id in (None, actor.id):
            return Delegate(actor.id, frozenset(actor.permissions), actor.roles[0] if actor.roles else None)
        if actor_id is None:
            return None

        def load() -> Delegate:
            row = User.select(User, Role).join(Role).where(User.id == actor_id).first()
            if row is None:
                return Delegate(actor_id, frozenset())
            return Delegate(actor_id, row.role.permission_set(), row.role_name)

        return await self._app.db.run(load)

    async def _as_delegate(self, actor_id: str | None, request: Any, target: dict[str, Any],
                           change: Callable[[Delegate | None], Any]) -> Any:
        """Run ``change(delegate)`` on a database thread; audit an ``EscalationRefused``."""
        delegate = await self._delegate(actor_id, request)
        try:
            return await self._app.db.run(lambda: change(delegate))
        except EscalationRefused as refusal:
            await self.audit(audit_log.ACCESS_ESCALATION_REFUSED, user_id=target.get("userId"),
                             actor_id=delegate.id if delegate else None, request=request,
                             details={**target, "reason": refusal.message})
            raise

    async def _change_user(self, user_id: str, fields: dict[str, Any], *, actor_id: str | None,
                           request: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        changed = await self._as_delegate(
            actor_id, request, {"userId": user_id, "changes": sorted(fields)},
            lambda delegate: management.change_user(user_id, delegate=delegate, **fields))
        if changed is None:
            return None
        before, after = changed
        if before["role"] != after["role"] or before["tier"] != after["tier"]:
            await sessions.invalidate_user(self._app, user_id)
        if before["isActive"] != after["isActive"]:
            # The flag is already written (in the transaction that checked the last-administrator
            # rule); this ends the sessions, keys and sockets, or clears their tombstones.
            await sessions.set_user_active(self._app, user_id, after["isActive"], reason="disabled")
        await self._audit_changes(before, after, actor_id=actor_id, request=request)
        return before, after

    async def _audit_changes(self, before: dict[str, Any], after: dict[str, Any], *,
                             actor_id: str | None, request: Any) -> None:
        user_id = after["id"]
        if before["role"] != after["role"]:
            await self.audit(audit_log.USER_ROLE_CHANGED, user_id=user_id, actor_id=actor_id, request=request,
                             details={"from": before["role"], "to": after["role"]})
        if before["isActive"] != after["isActive"]:
            await self.audit(audit_log.USER_ENABLED if after["isActive"] else audit_log.USER_DISABLED,
                             user_id=user_id, actor_id=actor_id, request=request)
        changes = {name: {"from": before[name], "to": after[name]}
                   for name in ("tier", "isEmailVerified") if before[name] != after[name]}
        if changes:
            await self.audit(audit_log.USER_UPDATED, user_id=user_id, actor_id=actor_id, request=request,
                             details={"changes": changes})

    async def delete_user(self, user_id: str, *, actor_id: str | None = None, request: Any = None) -> bool:
        app = self._app
        before = await self._as_delegate(actor_id, request, {"userId": user_id, "changes": ["deleted"]},
                                         lambda delegate: management.prepare_deletion(user_id, delegate))
        if before is None:
            return False
        # Disabled first: sessions, keys and sockets end on every node, so nothing new is
        # written while the plugins remove what they hold.
        await sessions.set_user_active(app, user_id, False, reason="deleted")
        try:
            await app.hooks.vachat_user_deleting(user_id=user_id)
        except ApiError:
            await app.db.run(management.restore_active, user_id, before["isActive"])
            if before["isActive"]:
                await sessions.set_user_active(app, user_id, True)
            raise
        await app.db.run(management.delete_account_rows, user_id)
        await self.audit(audit_log.USER_DELETED, user_id=user_id, actor_id=actor_id, request=request,
                         details={"role": before["role"]})
        return True

    async def user_figures(self) -> dict[str, int]:
        return await self._app.db.run(management.user_figures)

    async def list_roles(self) -> list[dict[str, Any]]:
        return await self._app.db.run(management.list_roles)

    async def create_role(self, name: str, *, description: str = "", permissions: list[str] = (),
                          actor_id: str | None = None, request: Any = None) -> dict[str, Any]:
        wanted = management.check_permissions_known(permissions, self._app.permissions)
        role = await self._as_delegate(actor_id, request, {"role": name, "permissions": wanted},
                                       lambda delegate: management.create_role(name, description, wanted, delegate))
        await self.audit(audit_log.ROLE_CREATED, actor_id=actor_id, request=request,
                         details={"role": name, "permissions": wanted})
        return role

    async def update_role(self, role_id: str, *, description: str | None = None,
                          permissions: list[str] | None = None, actor_id: str | None = None,
                          request: Any = None) -> dict[str, Any] | None:
        wanted = (management.check_permissions_known(permissions, self._app.permissions)
                  if permissions is not None else None)
        changed = await self._as_delegate(
            actor_id, request, {"roleId": role_id, "permissions": wanted},
            lambda delegate: management.update_role(role_id, description=description, permissions=wanted,
                                                    delegate=delegate))
        if changed is None:
            return None
        before, after = changed
        if before["permissions"] != after["permissions"]:
            await sessions.invalidate_role(self._app, after["name"])
        await self.audit(audit_log.ROLE_UPDATED, actor_id=actor_id, request=request, details={
            "role": after["name"], "from": before["permissions"], "to": after["permissions"],
            **({"description": after["description"]} if before["description"] != after["description"] else {})})
        return after

    async def query_audit(self, *, page: int = 1, limit: int = 20, user_id: str | None = None,
                          action: str | None = None, since: datetime.datetime | None = None,
                          until: datetime.datetime | None = None) -> tuple[list[dict[str, Any]], int]:
        since, until = _naive_utc(since), _naive_utc(until)
        return await self._app.db.run(lambda: management.query_audit(
            page=page, limit=limit, user_id=user_id, action=action, since=since, until=until))


def _naive_utc(moment: datetime.datetime | None) -> datetime.datetime | None:
    """Stored timestamps are naive UTC; an aware bound is converted to match."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
