"""Keeping open sockets' identities current after a change of role, tier, name or permissions.

A socket's ``actor`` is resolved once, when it authenticates. When an administrator changes a
user (``invalidate_user``) or a role's permissions (``invalidate_role``), the next REST request
reads the new state from the database, and so must the sockets already open, on every node:
each node re-reads the affected users of its own sockets and replaces their actors (a user
now disabled is closed instead). The other nodes hear of it through a hub control message.

This module must never leave a socket with permissions its user no longer has after the call
that changed them returned on this node.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from .models import Role, User
from .principal import CLOSE_SESSION_ENDED, principal_of

__all__ = ["refresh_users", "refresh_role", "install"]

log = logging.getLogger("vachat.accounts.live")

CONTROL_REFRESH = "accounts.refresh"


def install(app: Any) -> None:
    """Listen for other nodes' refreshes (at start-up)."""

    def on_refresh(message: dict[str, Any]) -> None:
        task = asyncio.ensure_future(_refresh_local(app, message.get("users") or [], message.get("role")))
        app.plugin_state("accounts").refresh_tasks.add(task)
        task.add_done_callback(app.plugin_state("accounts").refresh_tasks.discard)

    app.plugin_state("accounts").refresh_tasks = set()
    app.hub.on_control(CONTROL_REFRESH, on_refresh)


async def refresh_users(app: Any, user_ids: list[str]) -> None:
    """Re-read these users for every socket of theirs, here and on the other nodes."""
    await _refresh_local(app, user_ids, None)
    await app.hub.send_control(CONTROL_REFRESH, {"users": user_ids})


async def refresh_role(app: Any, role_name: str) -> None:
    """Re-read every connected holder of ``role_name``, here and on the other nodes."""
    await _refresh_local(app, [], role_name)
    await app.hub.send_control(CONTROL_REFRESH, {"role": role_name})


async def _refresh_local(app: Any, user_ids: list[str], role_name: str | None) -> None:
    wanted = {user_id for user_id in user_ids if app.hub.connections_of(user_id)}
    if role_name is not None:
        wanted |= {conn.actor.id for conn in app.hub.connections()
                   if conn.actor is not None and role_name in conn.actor.roles}
    if not wanted:
        return

    def load() -> dict[str, tuple[User, Role | None]]:
        rows = User.select(User, Role).join(Role).where(User.id.in_(list(wanted)))
        return {user.id: (user, user.role) for user in rows}

    users = await app.db.run(load)
    for user_id in wanted:
        found = users.get(user_id)
        for conn in app.hub.connections_of(user_id):
            if found is None or not found[0].is_active:
                app.hub.close(conn, CLOSE_SESSION_ENDED, "Account disabled")
                continue
            principal = principal_of(*found)
            conn.actor = dataclasses.replace(
                conn.actor, name=principal["name"], email=principal["email"],
                permissions=frozenset(principal["perms"]), roles=(principal["role"],), tier=principal["tier"] or "free")
