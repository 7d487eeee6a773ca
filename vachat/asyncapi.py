"""The AsyncAPI 3.0 document of the WebSocket endpoint, served at ``/api/asyncapi.json``.

Built from what the server runs on, so it cannot drift from it: the client events are the
``@ws_event`` registry (each with the schema its ``data`` is validated against), the server
events are the ``server_event`` declarations of the core and the plugins (with the schemas of
the ``data`` they send), the error codes are the ``ApiError`` classes, and the close codes are
``vachat.ws.CLOSE_CODES``. Schemas are the registry's, as components, exactly as the OpenAPI
document shows them.

One channel, ``/ws``: the server *receives* every client event on it and *sends* every server
event. Each message is the whole frame, ``{"type": <const>, "id"?, "data"}``.
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError
from .openapi import component_name, convert_schema
from .web import ApiHandler, endpoint
from .ws import CLOSE_CODES, PROTOCOL_VERSION

__all__ = ["build_asyncapi", "ASYNCAPI_ROUTES"]

# Frame ids are echoed back in replies (see docs/websocket.md); strings or numbers.
_FRAME_ID = {"type": ["string", "integer"], "description": "Echoed in the ack or error that answers this frame"}


def _error_codes() -> list[str]:
    codes: set[str] = set()
    pending: list[type[ApiError]] = [ApiError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return sorted(codes)


def _referenced(schema_ids: set[str], registry: Any) -> set[str]:
    """``schema_ids`` and every schema they reach through ``$ref``."""
    seen: set[str] = set()
    pending = list(schema_ids)
    while pending:
        schema_id = pending.pop()
        if schema_id in seen:
            continue
        seen.add(schema_id)
        converted = convert_schema(registry.get(schema_id), registry)
        stack: list[Any] = [converted]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                    name = ref.removeprefix("#/components/schemas/").split("/", 1)[0]
                    pending.extend(sid for sid in registry.ids() if component_name(sid) == name)
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return seen


def _frame(event_type: str, data: dict[str, Any] | None, *, with_id: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {"type": {"const": event_type}}
    if with_id:
        properties["id"] = _FRAME_ID
    if data is not None:
        properties["data"] = data
    return {"type": "object", "required": ["type"], "properties": properties}


def build_asyncapi(app: Any, host: str = "localhost:3000", secure: bool = False) -> dict[str, Any]:
    registry = app.schemas
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    channel_messages: dict[str, Any] = {}
    schema_ids: set[str] = set()

    def add(key: str, event_type: str, summary: str, schema_id: str | None, *, client: bool, extra: dict[str, Any]) -> None:
        if schema_id:
            schema_ids.add(schema_id)
        data = {"$ref": f"#/components/schemas/{component_name(schema_id)}"} if schema_id else None
        messages[key] = {"name": event_type, "title": event_type, "summary": summary or event_type,
                         "contentType": "application/json", "payload": _frame(event_type, data, with_id=client),
                         **extra}
        channel_messages[key] = {"$ref": f"#/components/messages/{key}"}
        operations[key] = {
            "action": "receive" if client else "send",
            "channel": {"$ref": "#/channels/socket"},
            "summary": summary or event_type,
            "messages": [{"$ref": f"#/channels/socket/messages/{key}"}],
        }

    for spec in app.events:
        extra = {"x-plugin": spec.plugin, "x-needs-auth": spec.auth,
                 **({"x-permission": spec.permission} if spec.permission else {})}
        add(f"client.{spec.type}", spec.type, spec.summary, spec.schema, client=True, extra=extra)
    for event in app.server_events:
        add(f"server.{event.type}", event.type, event.summary, event.schema, client=False,
            extra={"x-plugin": event.plugin, "x-audience": event.audience})
    if "core/ws/error" in registry:
        schema_ids.add("core/ws/error")

    schemas = {component_name(schema_id): convert_schema(registry.get(schema_id), registry)
               for schema_id in sorted(_referenced(schema_ids, registry))}
    error = schemas.get(component_name("core/ws/error"))
    if error is not None:  # the codes are the server's own error classes
        error.setdefault("properties", {})["code"] = {"type": "string", "enum": _error_codes()}

    close_codes = "\n".join(f"- `{code}`: {meaning}" for code, meaning in sorted(CLOSE_CODES.items()))
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "vachat WebSocket API",
            "version": app.version,
            "description": (
                f"The /ws protocol, version {PROTOCOL_VERSION}. Authenticate with `?token=`, an "
                "`Authorization: Bearer` header or an `X-API-Key` header on the upgrade, or with an "
                "`auth` frame first. Frames are JSON `{type, id?, data}`; a client frame with an `id` "
                "is answered by an `ack` or an `error` with the same id.\n\nClose codes:\n" + close_codes),
        },
        "servers": {"this": {"host": host, "protocol": "wss" if secure else "ws", "pathname": "/ws",
                             "description": "This server"}},
        "defaultContentType": "application/json",
        "channels": {"socket": {"address": "/ws", "title": "The WebSocket", "messages": channel_messages}},
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
        "x-close-codes": {str(code): meaning for code, meaning in sorted(CLOSE_CODES.items())},
    }


class AsyncApiHandler(ApiHandler):
    @endpoint("The AsyncAPI 3.0 document of the WebSocket protocol (/ws)", auth=False, tags=("documentation",))
    async def get(self) -> None:
        self.write_json(build_asyncapi(self.application, self.request.host, self.is_https))


ASYNCAPI_ROUTES = [
    (r"/api/asyncapi.json", AsyncApiHandler),
]
