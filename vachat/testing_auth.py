"""A stand-in authentication plugin for tests: ``Authorization: Bearer test:<id>`` names the caller.

It answers only when the server runs with ``VACHAT_ENV=test``, so even if it were loaded by
mistake in development or production it would authenticate nobody. The test fixtures register
it directly; a test server process loads it with ``VACHAT_PLUGIN_MODULES=vachat.testing_auth``.
Optional ``X-Test-Permissions: a,b`` grants permissions, ``X-Test-Session`` names a session.
"""

from __future__ import annotations

from typing import Any

from .plugin_api import Actor, Unauthorized, hookimpl

__version__ = "1.0"
NAME = "testauth"


@hookimpl
def vachat_actor_from_request(app: Any, headers: Any, remote_ip: str) -> Actor | None:
    if app.config.env != "test":
        return None
    authorization = headers.get("Authorization", "")
    if not authorization.startswith("Bearer test:"):
        return None  # another plugin's credentials
    user_id = authorization[len("Bearer test:"):]
    if not user_id or user_id == "invalid":
        raise Unauthorized("Invalid test credentials")
    permissions = frozenset(p.strip() for p in headers.get("X-Test-Permissions", "").split(",") if p.strip())
    return Actor(id=user_id, name=user_id.title(), permissions=permissions,
                 session_id=headers.get("X-Test-Session") or f"session-{user_id}")
