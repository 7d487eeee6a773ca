"""The accounts hook implementations: the core's authentication for REST and WebSocket.

Registered first in ``vachat.plugin_manager.CORE_PLUGINS``. It answers
``vachat_actor_from_request`` for

- ``Authorization: Bearer <access JWT>`` → the user of a live session
  (``Actor.session_id`` = the session id);
- ``X-API-Key: vak_…`` (or ``Authorization: Bearer vak_…``, which is how a WebSocket ``auth``
  frame's token arrives) → the key's user (``Actor.api_key_id`` = the key id,
  ``Actor.session_id`` = ``apikey:<key id>``, so revoking the key closes its sockets);

with the permissions of the user's role and the user's tier. Any other Bearer token is not
ours (``None``: another plugin may know it). Our credentials that fail raise ``TokenExpired``
or ``Unauthorized``. It also contributes the ``/api/auth`` and ``/api/users`` routes, the
core's permissions (``users.*``, ``roles.manage``, ``audit.read``), the ``accounts`` service
(``app.accounts``), the ``seed`` and ``create-admin`` commands and, at start-up, creates the
default roles when they are missing, so a fresh server works without ``seed``.

This module must never accept a token without checking its session (revocation must bite
on the very next request), and never log credentials.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from typing import Any

from ..plugin_api import Actor, hookimpl
from . import apikeys, sessions, tokens
from .service import AccountsService


log = logging.getLogger("vachat.accounts")

# Users and RBAC are the core's: these are its permissions. Plugins declare their own.
CORE_PERMISSIONS = (
    ("users.read", "Read any user's account"),
    ("users.update", "Change any user's account"),
    ("users.delete", "Delete user accounts"),
    ("roles.manage", "Create and change roles"),
    ("audit.read", "Read the audit log"),
)

# Modules contributing routes (each exposes ``ROUTES``); optional ones may be absent.
ROUTE_MODULES = ("vachat.accounts.auth_handlers", "vachat.accounts.recovery", "vachat.accounts.profile",
                 "vachat.accounts.self_service", "vachat.accounts.pages")


# Actors of one role share their permission set and roles tuple (an idle socket keeps its
# actor for its whole life: one frozenset per socket was ~200 bytes each). Bounded: emptied
# when full, which only costs the sharing.
_SHARED_MAX = 1024
_shared: dict[Any, Any] = {}


def _shared_value(key: Any, make: Any) -> Any:
    value = _shared.get(key)
    if value is None:
        if len(_shared) >= _SHARED_MAX:
            _shared.clear()
        value = _shared[key] = make()
    return value


def actor_from_principal(principal: dict[str, Any], *, session_id: str | None,
                         api_key_id: str | None = None) -> Actor:
    perms = tuple(principal.get("perms", ()))
    role = principal.get("role", "")
    return Actor(
        id=principal["uid"],
        name=principal.get("name", ""),
        email=principal.get("email", ""),
        permissions=_shared_value(("perms", perms), lambda: frozenset(perms)),
        roles=_shared_value(("role", role), lambda: (role,)),
        session_id=session_id,
        api_key_id=api_key_id,
        tier=principal.get("tier") or "free",
    )


async def _actor_for_api_key(app: Any, key: str) -> Actor:
    principal = await apikeys.api_key_principal(app, key.strip())
    return actor_from_principal(principal, session_id=apikeys.api_key_session_id(principal["kid"]),
                                api_key_id=principal["kid"])


async def _actor_for_access_token(app: Any, token: str, *, remember: bool = True) -> Actor:
    claims = tokens.verified_access_tokens(app).claims(app.config, token, remember=remember)
    principal = await sessions.session_principal(app, claims["sid"], claims["sub"])
    return actor_from_principal(principal, session_id=claims["sid"])


@hookimpl
def vachat_actor_from_request(app: Any, headers: Any, remote_ip: str) -> Any:
    key = (headers.get("X-API-Key") or "").strip()
    if key:
        # Not vak_…: not ours (another plugin may issue keys); with no taker it is a 401.
        return _actor_for_api_key(app, key) if apikeys.looks_like_api_key(key) else None
    authorization = headers.get("Authorization") or ""
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    credential = credential.strip()
    if apikeys.looks_like_api_key(credential):
        return _actor_for_api_key(app, credential)
    if tokens.looks_like_jwt(credential):
        # A WebSocket presents its token once (on the upgrade or in its auth frame, which
        # says Upgrade too): remembering it would only hold memory for every socket.
        once = (headers.get("Upgrade") or "").lower() == "websocket"
        return _actor_for_access_token(app, credential, remember=not once)
    return None


@hookimpl
def vachat_routes(app: Any) -> list[tuple]:
    routes: list[tuple] = []
    for module_name in ROUTE_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise  # the module exists but is broken: that must be seen
            continue
        routes.extend(getattr(module, "ROUTES", []))
    return routes


@hookimpl
def vachat_permissions() -> list[tuple[str, str]]:
    return list(CORE_PERMISSIONS)


@hookimpl
def vachat_services(app: Any) -> dict[str, Any]:
    return {"accounts": AccountsService(app)}


@hookimpl
def vachat_commands(commands: argparse._SubParsersAction) -> None:
    from .commands import add_commands

    add_commands(commands)


@hookimpl
async def vachat_startup(app: Any) -> None:
    from .live import install

    install(app)
    from .commands import ensure_default_roles

    created = await app.db.run(ensure_default_roles)
    if created:
        log.info("created the default roles", extra={"roles": created})
    from .grants import apply_default_grants

    granted = await app.db.run(apply_default_grants, app.default_grants)
    for role_name, permissions in granted.items():
        log.info("granted permissions by default", extra={"role": role_name, "permissions": permissions})
        await app.accounts.invalidate_role(role_name)
