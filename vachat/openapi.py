"""The OpenAPI 3.1 document, generated from the routes' ``@endpoint`` declarations and the
schema registry (the same files that validate requests), plus a plain HTML docs page.

The document is built once per application and cached; it lists every REST operation and, as
``x-websocket-events``, every WebSocket event with its schema.
"""

from __future__ import annotations

import copy
import re
from typing import Any
from urllib.parse import urljoin

from .web import ApiHandler, Endpoint, endpoint

__all__ = ["build_openapi", "OPENAPI_ROUTES", "component_name", "convert_schema"]

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
_GROUP = re.compile(r"\((\?P<(?P<name>\w+)>)?[^()]*\)")
ERROR_DESCRIPTIONS = {
    400: "Validation failed (VALIDATION_FAILED)", 401: "Not authenticated (UNAUTHORIZED, TOKEN_EXPIRED)",
    403: "Not allowed (FORBIDDEN)", 404: "Not found (NOT_FOUND)", 409: "Conflict (CONFLICT)",
    413: "Body too large (PAYLOAD_TOO_LARGE)", 415: "Not JSON (UNSUPPORTED_MEDIA_TYPE)",
    429: "Rate limited (RATE_LIMITED, QUOTA_EXCEEDED)", 503: "Unavailable (UNAVAILABLE)",
}


def component_name(schema_id: str) -> str:
    return schema_id.replace("/", ".")


def _openapi_path(pattern: str) -> tuple[str, list[str]]:
    names: list[str] = []

    def replace(match: re.Match) -> str:
        name = match.group("name") or f"param{len(names) + 1}"
        names.append(name)
        return "{" + name + "}"

    path = _GROUP.sub(replace, pattern.rstrip("$").lstrip("^"))
    return path.replace("\\", ""), names


def convert_schema(schema: dict[str, Any], registry: Any) -> dict[str, Any]:
    """A registry schema as an OpenAPI component: ``$ref``s to other files point at components."""
    base = schema["$id"]

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            converted = {}
            for key, value in node.items():
                if key in ("$id", "$schema"):
                    continue
                if key == "$ref" and isinstance(value, str):
                    target, _, fragment = urljoin(base, value).partition("#")
                    schema_id = registry.id_for_uri(target)
                    if schema_id is not None:
                        value = f"#/components/schemas/{component_name(schema_id)}"
                        if fragment:
                            value += fragment
                    elif value.startswith("#"):
                        value = f"#/components/schemas/{component_name(registry.id_for_uri(base))}{value[1:]}"
                converted[key] = walk(value)
            return converted
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(copy.deepcopy(schema))


def _ref(schema_id: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{component_name(schema_id)}"}


def _operation(handler: type, method: str, spec: Endpoint, path_params: list[str], registry: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": f"{method}{handler.__name__.removesuffix('Handler')}",
        "summary": spec.summary,
        "tags": list(spec.tags) or [handler.__module__.split(".")[-1]],
        "parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                       for name in path_params],
    }
    if spec.description:
        operation["description"] = spec.description
    if spec.query:
        query = registry.get(spec.query)
        for name, prop in registry.object_properties(spec.query).items():
            operation["parameters"].append({
                "name": name, "in": "query", "required": name in query.get("required", []),
                "schema": convert_schema({"$id": query["$id"], **prop}, registry),
            })
    if spec.body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(spec.body)}}}
    data_schema = _ref(spec.response) if spec.response else {}
    success = {"type": "object", "required": ["success", "data"],
               "properties": {"success": {"const": True}, "data": data_schema, "message": {"type": "string"},
                              "pagination": _ref("core/pagination")}}
    operation["responses"] = {str(spec.status): {"description": "Success",
                                                 "content": {"application/json": {"schema": success}}}}
    statuses = set(spec.errors) | {429}
    if spec.body or spec.query:
        statuses |= {400}
    if spec.body:
        statuses |= {413, 415}
    if spec.auth:
        statuses |= {401}
        operation["security"] = [{"bearerAuth": []}, {"apiKey": []}]
    if spec.permission:
        statuses |= {403}
        operation["x-permission"] = spec.permission
    for status in sorted(statuses):
        operation["responses"][str(status)] = {
            "description": ERROR_DESCRIPTIONS.get(status, "Error"),
            "content": {"application/json": {"schema": _ref("core/error")}},
        }
    return operation


def build_openapi(app: Any) -> dict[str, Any]:
    registry = app.schemas
    paths: dict[str, dict[str, Any]] = {}
    for route in app.route_table:
        pattern, handler = route[0], route[1]
        if not (isinstance(handler, type) and issubclass(handler, ApiHandler)):
            continue
        path, params = _openapi_path(pattern)
        for method in HTTP_METHODS:
            spec = getattr(getattr(handler, method, None), "endpoint", None)
            if spec is not None:
                paths.setdefault(path, {})[method] = _operation(handler, method, spec, params, registry)
    events = [
        {"type": spec.type, "summary": spec.summary, "plugin": spec.plugin, "auth": spec.auth,
         **({"permission": spec.permission} if spec.permission else {}),
         **({"schema": _ref(spec.schema)} if spec.schema else {})}
        for spec in app.events
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "vachat API", "version": app.version,
                 "description": "REST API of vachat. Every response uses the success or error envelope; "
                                "the WebSocket protocol at /ws is listed under x-websocket-events."},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {component_name(schema_id): convert_schema(registry.get(schema_id), registry)
                        for schema_id in registry.ids()},
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "x-websocket-events": events,
    }


class OpenApiHandler(ApiHandler):
    @endpoint("This OpenAPI 3.1 document", auth=False, tags=("documentation",))
    async def get(self) -> None:
        app = self.application
        if getattr(app, "_openapi_cache", None) is None:
            app._openapi_cache = build_openapi(app)
        self.write_json(app._openapi_cache)


OPENAPI_ROUTES = [
    (r"/api/openapi.json", OpenApiHandler),
]
