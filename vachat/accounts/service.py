"""The accounts service that plugins use (``app.accounts``; ``vachat.interfaces.Accounts``).

Plugins never import ``vachat.accounts``: they reach users, sessions and the audit log through
this object, which the accounts plugin publishes as the service ``"accounts"``. Each method
delegates to the module that owns the behaviour, so the REST handlers and plugins share one
code path (revocations close sockets on every node, audit rows look the same).
"""

from __future__ import annotations

from typing import Any

from . import audit as audit_log
from . import sessions
from ..db import now
from .models import User

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
        return await sessions.set_user_active(self._app, user_id, active, actor_id=actor_id, handler=request)

    async def set_avatar_url(self, user_id: str, url: str | None) -> bool:
        def write() -> int:
            return User.update(avatar_url=url, updated_at=now()).where(User.id == user_id).execute()

        changed = bool(await self._app.db.run(write))
        if changed:
            await sessions.invalidate_user(self._app, user_id)
        return changed

    async def end_sessions(self, user_id: str, *, reason: str = "ended") -> int:
        ended = await sessions.revoke_user_sessions(self._app, user_id, reason=reason)
        await self._app.hub.disconnect(user_id=user_id, code=sessions.CLOSE_SESSION_ENDED, reason="Signed out")
        return ended

    async def invalidate_user(self, user_id: str) -> None:
        await sessions.invalidate_user(self._app, user_id)

    async def invalidate_role(self, role_name: str) -> None:
        await sessions.invalidate_role(self._app, role_name)

    async def audit(self, action: str, *, user_id: str | None = None, actor_id: str | None = None,
                    request: Any = None, details: dict[str, Any] | None = None) -> None:
        await audit_log.audit(self._app, request, action, user_id=user_id, actor_id=actor_id, details=details)
