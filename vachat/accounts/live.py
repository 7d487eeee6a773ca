"""Keeping open sockets' identities current after a change of role, tier, name or permissions.

A socket's ``actor`` is resolved once, when it authenticates. When an administrator changes a
user (``invalidate_user``) or a role's permissions (``invalidate_role``), the next REST request
reads the new state from the database, and so must the sockets already open, on every node:
each node re-reads the affected users of its own sockets and replaces their actors (a user
now disabled is closed instead; a socket opened with an API key gets the key's share), then
tells the plugins (``vachat_socket_actors_changed``), which take the sockets out of what they
may no longer see. The other nodes hear of it through a hub control message.

This module must never leave a socket with permissions its user no longer has after the call
that changed them returned on this node.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from .models import ApiKey, Role, User
from .principal import CLOSE_SESSION_ENDED, key_permissions, principal_of

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

    # The sockets open now; one opened while the query runs reads the new state itself. Those
    # opened with an API key act with the key's share of the new permissions.
    sockets = {user_id: [conn for conn in app.hub.connections_of(user_id) if conn.actor is not None]
               for user_id in wanted}
    key_ids = [conn.actor.api_key_id for conns in sockets.values() for conn in conns if conn.actor.api_key_id]

    def load() -> tuple[dict[str, tuple[User, Role | None]], dict[str, list[str] | None]]:
        rows = User.select(User, Role).join(Role).where(User.id.in_(list(wanted)))
        keys = (ApiKey.select(ApiKey.id, ApiKey.permissions).where(ApiKey.id.in_(key_ids)) if key_ids else [])
        return {user.id: (user, user.role) for user in rows}, {key.id: key.permissions for key in keys}

    users, keys = await app.db.run(load)
    changed = []
    for user_id, conns in sockets.items():
        found = users.get(user_id)
        for conn in conns:
            key_id = conn.actor.api_key_id
            if found is None or not found[0].is_active:
                app.hub.close(conn, CLOSE_SESSION_ENDED, "Account disabled")
                continue
            if key_id and key_id not in keys:
                app.hub.close(conn, CLOSE_SESSION_ENDED, "API key revoked")
                continue
            principal = principal_of(*found)
            permissions = frozenset(principal["perms"])
            if key_id:
                permissions = key_permissions(permissions, keys[key_id])
            conn.actor = dataclasses.replace(
                conn.actor, name=principal["name"], email=principal["email"],
                permissions=permissions, roles=(principal["role"],), tier=principal["tier"] or "free")
            changed.append(conn)
    if changed:
        # Plugins re-check what these sockets hold (rooms joined, subscriptions) against the
        # new permissions, before this returns.
        await app.hooks.notify("vachat_socket_actors_changed", sockets=changed)
