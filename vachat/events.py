"""WebSocket event declarations: ``@ws_event`` and the registry the socket dispatches through,
and ``server_event``, the frames the server sends, declared for the AsyncAPI document.

An event handler is ``async def handler(ctx: EventContext, data) -> ack data``. The decorator
records its type, the schema its ``data`` must match, whether it needs an authenticated socket,
the permission it needs and an optional per-socket rate. Plugins return their handlers from
the ``vachat_ws_events`` hook; the core registers its own (``auth``, ``ping``) the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, Iterator, TypeVar

from .config import Rate

__all__ = ["ws_event", "EventSpec", "EventRegistry", "ServerEvent", "server_event", "ServerEventRegistry"]

log = logging.getLogger("vachat.events")

EventHandler = Callable[[Any, Any], Awaitable[Any]]
Declared = TypeVar("Declared")


@dataclass(frozen=True)
class EventSpec:
    type: str
    handler: EventHandler
    schema: str | None = None  # schema id that ``data`` must match
    auth: bool = True
    permission: str | None = None
    rate: Rate | None = None  # extra per-socket limit for this event, on top of the socket's
    summary: str = ""
    plugin: str = "core"


def ws_event(
    event_type: str,
    *,
    schema: str | None = None,
    auth: bool = True,
    permission: str | None = None,
    rate: str | Rate | None = None,
    summary: str = "",
) -> Callable[[EventHandler], EventHandler]:
    """Declare a WebSocket event handler for client frames of type ``event_type``."""

    def decorate(handler: EventHandler) -> EventHandler:
        handler.ws_event = EventSpec(  # type: ignore[attr-defined]
            event_type, handler, schema, auth or bool(permission), permission,
            Rate.parse(rate) if isinstance(rate, str) else rate,
            summary or (handler.__doc__ or "").strip().split("\n")[0],
        )
        return handler

    return decorate


class _Registry(Generic[Declared]):
    """Declarations by type, each remembering the plugin that made it; a type declared twice
    is refused (``ValueError``), a value of the wrong kind too (``TypeError``)."""

    what = "declaration"

    def __init__(self) -> None:
        self._by_type: dict[str, Declared] = {}

    def _declared(self, item: Any) -> Declared:
        raise NotImplementedError

    def register(self, item: Any, plugin: str = "core") -> Declared:
        declared = self._declared(item)
        kind: str = getattr(declared, "type")
        if kind in self._by_type:
            taken_by = getattr(self._by_type[kind], "plugin")
            raise ValueError(f"{self.what} {kind!r} is already declared by {taken_by}")
        declared = dataclasses.replace(declared, plugin=plugin)  # type: ignore[type-var]
        self._by_type[kind] = declared
        return declared

    def get(self, event_type: str) -> Declared | None:
        return self._by_type.get(event_type)

    def __iter__(self) -> Iterator[Declared]:
        return iter(sorted(self._by_type.values(), key=lambda declared: getattr(declared, "type")))

    def __contains__(self, event_type: str) -> bool:
        return event_type in self._by_type


class EventRegistry(_Registry[EventSpec]):
    """The client events the socket dispatches: ``@ws_event`` handlers."""

    what = "event type"

    def _declared(self, handler: Any) -> EventSpec:
        spec: EventSpec | None = getattr(handler, "ws_event", None)
        if spec is None:
            raise TypeError(f"{handler!r} is not decorated with @ws_event")
        return spec


@dataclass(frozen=True)
class ServerEvent:
    """A frame the server sends: ``{"type": type, "data": <schema>}``, to ``audience``."""

    type: str
    summary: str
    schema: str | None = None  # schema id of ``data``
    audience: str = "the socket"  # who gets it: "the socket", "conversation:<id>", "user:<owner>"
    plugin: str = "core"


def server_event(event_type: str, summary: str, *, schema: str | None = None,
                 audience: str = "the socket") -> ServerEvent:
    """Declare a frame type this plugin sends (return it from ``vachat_server_events``): it
    is listed, with its schema, in the AsyncAPI document at ``/api/asyncapi.json``."""
    return ServerEvent(event_type, summary, schema, audience)


class ServerEventRegistry(_Registry["ServerEvent"]):
    """The frames the server sends (``server_event`` declarations), for the AsyncAPI document."""

    what = "server event"

    def _declared(self, event: Any) -> "ServerEvent":
        if not isinstance(event, ServerEvent):
            raise TypeError(f"{event!r} is not a server_event(...)")
        return event
