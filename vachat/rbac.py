"""Role-based access control: ``requires("perm", ...)`` for REST methods and WebSocket events.

A role holds permission strings; ``*`` grants all (``Actor.has``). Permissions are declared
by the core (``app.permissions``) and by plugins (the ``vachat_permissions`` hook), as
``Permission`` values (or ``(name, description)`` pairs). A ``Permission``'s ``grant_to`` names
the roles it is added to once, the first time a database sees it (``vachat.accounts.grants``):
an operator's later revoke stays.

``requires`` works stacked either way round with ``@endpoint`` / ``@ws_event``:

    class Users(ApiHandler):
        @endpoint("List users")
        @requires("users.read")
        async def get(self): ...

    @ws_event("moderate")
    @requires("chat.moderate")
    async def moderate(ctx, data): ...

Written outside the declaration decorator, it also records the permission in the
declaration (so OpenAPI shows it and the socket checks it before validating the frame).

This module must never let an unauthenticated caller through: no actor means 401, an actor
without every required permission means 403.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Awaitable, Callable

from .errors import Forbidden, Unauthorized

__all__ = ["requires", "check_permissions", "has_permission", "Permission"]

Handler = Callable[..., Awaitable[Any]]


@dataclasses.dataclass(frozen=True)
class Permission:
    """A permission a plugin introduces. ``grant_to`` names roles (``"user"``) that get it by
    default: added to each once, when the permission is first seen, never again after an
    operator revokes it. ``*`` is never granted this way (only the admin role holds it)."""

    name: str
    description: str = ""
    grant_to: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or self.name == "*":
            raise ValueError(f"a permission needs a dotted name, not {self.name!r}")
        if isinstance(self.grant_to, str):  # grant_to="user" would grant to "u", "s", …
            raise TypeError(f"Permission({self.name!r}): grant_to is a tuple of role names, like ('user',)")

    @classmethod
    def of(cls, declared: "Permission | tuple[str, str]") -> "Permission":
        """A ``Permission`` from what ``vachat_permissions`` returned (one or a pair)."""
        if isinstance(declared, Permission):
            return declared
        name, description = declared
        return cls(name, description)


def has_permission(actor: Any, permission: str) -> bool:
    return actor is not None and actor.has(permission)


def check_permissions(actor: Any, permissions: tuple[str, ...]) -> None:
    """Raise ``Unauthorized`` without an actor, ``Forbidden`` unless it has every permission."""
    if actor is None:
        raise Unauthorized()
    missing = [permission for permission in permissions if not actor.has(permission)]
    if missing:
        raise Forbidden(f"Missing permission {', '.join(missing)}")


def _is_rest_handler(candidate: Any) -> bool:
    from .web import ApiHandler

    return isinstance(candidate, ApiHandler)


def requires(*permissions: str) -> Callable[[Handler], Handler]:
    """Require every one of ``permissions`` of the caller (REST method or WebSocket event)."""
    if not permissions or not all(isinstance(p, str) and p for p in permissions):
        raise ValueError("requires() needs at least one permission name")

    def decorate(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def wrapper(first: Any, *args: Any, **kwargs: Any) -> Any:
            if _is_rest_handler(first):
                if first.actor is None:
                    # Outside @endpoint: authenticate now (the endpoint's own check follows).
                    first.actor = await first.application.resolve_actor(first.request.headers, first.client_ip)
                check_permissions(first.actor, permissions)
            else:  # a WebSocket EventContext
                check_permissions(getattr(first, "actor", None), permissions)
            return await fn(first, *args, **kwargs)

        wrapper.required_permissions = tuple(permissions)  # type: ignore[attr-defined]
        # Stacked outside the declaration: keep it, with the permission recorded. The
        # declarations hold one permission; the first is recorded, all are enforced here.
        endpoint_spec = getattr(fn, "endpoint", None)
        if endpoint_spec is not None:
            wrapper.endpoint = dataclasses.replace(  # type: ignore[attr-defined]
                endpoint_spec, auth=True, permission=endpoint_spec.permission or permissions[0])
        event_spec = getattr(fn, "ws_event", None)
        if event_spec is not None:
            wrapper.ws_event = dataclasses.replace(  # type: ignore[attr-defined]
                event_spec, handler=wrapper, auth=True, permission=event_spec.permission or permissions[0])
        return wrapper

    return decorate
