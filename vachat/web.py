"""The REST handler base: request ids, CORS and security headers, the response envelope,
declared and validated parameters, authentication and permission checks, rate limiting.

Every REST handler, core or plugin, extends ``ApiHandler`` and declares each HTTP method with
``@endpoint(...)``. The declaration is the single source for validation and for OpenAPI.
Errors are raised as ``ApiError``s and rendered in exactly one place, ``write_error``.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import json
import logging
import math
import re
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import peewee
import tornado.web
from tornado.httputil import HTTPHeaders

from .errors import (
    ApiError, Conflict, Forbidden, InternalError, PayloadTooLarge, RateLimited, Unauthorized,
    UnsupportedMediaType, ValidationFailed, error_for_status,
)

__all__ = ["ApiHandler", "endpoint", "Endpoint", "NotFoundHandler", "json_dumps", "parse_json", "client_ip", "Actor"]

log = logging.getLogger("vachat.web")

REQUEST_ID_HEADER = "X-Request-ID"
# A client-sent request id is echoed only when it is short and plain, so it is safe in logs.
_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
CORS_ALLOWED_HEADERS = "Authorization, Content-Type, X-API-Key, X-Request-ID"
CORS_EXPOSED_HEADERS = "X-Request-ID, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining"
# Browsers may reuse a preflight answer this long (s); short enough that config changes apply.
CORS_MAX_AGE = 600
# Text no database column can hold: NUL (PostgreSQL refuses it) and lone UTF-16 surrogates
# (JSON's "\ud800" escapes; not encodable as UTF-8). Refused at the door, not as a 500 later.
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")
# What such text looks like in a body (escaped, raw surrogate bytes, or a UTF-16/32 body): only
# then is the parsed body searched for it, so ordinary bodies cost nothing.
_MAYBE_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\x00|\xed[\xa0-\xbf]")
_MAYBE_UNSTORABLE_TEXT = re.compile("\\\\u(?:0000|[dD][89a-fA-F])|[\x00\ud800-\udfff]")
# Bodies larger than this (bytes) are parsed and validated on a worker thread: checking a
# 1 MiB array item by item costs the IOLoop about two seconds, a small form well under 1 ms.
VALIDATE_ON_LOOP_BYTES = 64 * 1024
API_CSP = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=31536000; includeSubDomains"


@dataclass(frozen=True)
class Actor:
    """Who is calling: a user through a session or an API key. ``permissions`` may hold ``*``."""

    id: str
    name: str = ""
    email: str = ""
    permissions: frozenset[str] = frozenset()
    roles: tuple[str, ...] = ()
    session_id: str | None = None
    api_key_id: str | None = None
    tier: str = "free"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def has(self, permission: str) -> bool:
        return "*" in self.permissions or permission in self.permissions


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, (datetime.date, uuid.UUID)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"), ensure_ascii=False)


def client_ip(remote_ip: str, headers: HTTPHeaders, trusted: list[Any]) -> str:
    """The client's address: the peer, or the last untrusted hop of ``X-Forwarded-For`` when
    the peer is a trusted proxy. A client cannot spoof its way past rate limits otherwise."""
    if not trusted or not _in_networks(remote_ip, trusted):
        return remote_ip
    hops = [hop.strip() for hop in headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _in_networks(hop, trusted):
            return hop if _is_ip(hop) else remote_ip
    return hops[0] if hops and _is_ip(hops[0]) else remote_ip


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _in_networks(address: str, networks: list[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


@dataclass(frozen=True)
class Endpoint:
    """What a handler method accepts and returns: the source of validation and of OpenAPI."""

    summary: str
    body: str | None = None  # schema id of the JSON body
    query: str | None = None  # schema id describing query parameters (an object schema)
    response: str | None = None  # schema id of ``data`` in the success envelope
    auth: bool = True
    permission: str | None = None
    status: int = 200
    tags: tuple[str, ...] = ()
    description: str = ""
    errors: tuple[int, ...] = ()


def endpoint(
    summary: str,
    *,
    body: str | None = None,
    query: str | None = None,
    response: str | None = None,
    auth: bool = True,
    permission: str | None = None,
    status: int = 200,
    tags: tuple[str, ...] | list[str] = (),
    description: str = "",
    errors: tuple[int, ...] = (),
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Declare a handler method: who may call it, what it takes and what it answers.

    Before the method runs, the caller is authenticated (``auth``) and checked for
    ``permission``; ``self.body`` holds the body validated against ``body`` and ``self.query``
    the query string converted and validated against ``query``.
    """
    spec = Endpoint(summary, body, query, response, auth or bool(permission), permission, status,
                    tuple(tags), description, tuple(errors))

    def decorate(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def wrapper(self: "ApiHandler", *args: Any, **kwargs: Any) -> Any:
            if self._finished:  # answered while the body streamed in (413): nothing left to do
                return None
            await self._authorize(spec)
            if spec.query:
                self.query = self._parse_query(spec.query)
            if spec.body:
                self.body = await self._parse_body(spec.body)
            return await method(self, *args, **kwargs)

        wrapper.endpoint = spec  # type: ignore[attr-defined]
        return wrapper

    return decorate


@tornado.web.stream_request_body
class ApiHandler(tornado.web.RequestHandler):
    """Base of every REST handler. Subclasses set ``max_body_size`` to raise the body cap."""

    #: Bytes of body accepted; ``None`` means the server's ``MAX_JSON_BODY``.
    max_body_size: int | None = None
    #: Count requests against the per-IP global limit.
    rate_limited: bool = True

    actor: Actor | None = None
    body: Any = None
    query: dict[str, Any]

    @property
    def app(self) -> Any:
        """The application as the plugin API describes it (``vachat.interfaces.App``)."""
        return self.application

    # -- Tornado template methods ---------------------------------------------

    def set_default_headers(self) -> None:
        self.set_header(REQUEST_ID_HEADER, self.request_id)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Content-Security-Policy", API_CSP)
        self.set_header("Cache-Control", "no-store")
        if self.is_https:
            self.set_header("Strict-Transport-Security", HSTS)
        origin = self.request.headers.get("Origin")
        if origin and self.application.origin_allowed(origin, self.request):
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Allow-Credentials", "true")
            self.set_header("Access-Control-Expose-Headers", CORS_EXPOSED_HEADERS)
            self.add_header("Vary", "Origin")

    async def prepare(self) -> None:
        self.query = {}
        self._body_chunks: list[bytes] = []
        self._body_size = 0
        self.application.request_started(self)
        limit = self.max_body_size or self.application.config.max_json_body
        self._body_limit = limit
        declared = self.request.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
        if self.rate_limited and self.request.method != "OPTIONS":
            await self._check_global_rate_limit()

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._body_size += len(chunk)
        if self._body_size > self._body_limit:
            # Chunked bodies carry no length up front: stop reading and answer now.
            self.send_error(413, exc_info=(PayloadTooLarge, PayloadTooLarge(f"Request body exceeds {self._body_limit} bytes"), None))
            return
        self._body_chunks.append(chunk)

    def on_finish(self) -> None:
        self.application.request_finished(self)

    async def options(self, *args: Any, **kwargs: Any) -> None:
        """CORS preflight: answered for every route, without authentication."""
        methods = [m for m in self.SUPPORTED_METHODS if m != "OPTIONS" and _implements(type(self), m)]
        self.set_header("Allow", ", ".join(methods + ["OPTIONS"]))
        if "Access-Control-Allow-Origin" in self._headers:
            self.set_header("Access-Control-Allow-Methods", ", ".join(methods + ["OPTIONS"]))
            self.set_header("Access-Control-Allow-Headers", CORS_ALLOWED_HEADERS)
            self.set_header("Access-Control-Max-Age", str(CORS_MAX_AGE))
        self.set_status(204)
        self.finish()

    # -- identity ---------------------------------------------------------------

    @property
    def request_id(self) -> str:
        request = self.request
        cached = getattr(request, "_vachat_request_id", None)
        if cached is None:
            sent = request.headers.get(REQUEST_ID_HEADER, "")
            cached = sent if _REQUEST_ID_PATTERN.match(sent) else uuid.uuid4().hex
            request._vachat_request_id = cached  # type: ignore[attr-defined]
        return cached

    @property
    def client_ip(self) -> str:
        cached = getattr(self.request, "_vachat_client_ip", None)
        if cached is None:
            cached = client_ip(self.request.remote_ip or "", self.request.headers,
                               self.application.trusted_networks)
            self.request._vachat_client_ip = cached  # type: ignore[attr-defined]
        return cached

    @property
    def is_https(self) -> bool:
        if self.request.protocol == "https":
            return True
        trusted = self.application.trusted_networks
        return bool(trusted) and _in_networks(self.request.remote_ip or "", trusted) and \
            self.request.headers.get("X-Forwarded-Proto", "").lower() == "https"

    async def _authorize(self, spec: Endpoint) -> None:
        if spec.auth:
            self.actor = await self.application.resolve_actor(self.request.headers, self.client_ip)
            if self.actor is None:
                raise Unauthorized()
            if spec.permission and not self.actor.has(spec.permission):
                raise Forbidden(f"Missing permission {spec.permission}")
        else:
            try:  # public endpoints still learn who calls, for logs, when credentials are good
                self.actor = await self.application.resolve_actor(self.request.headers, self.client_ip)
            except ApiError:
                self.actor = None

    async def _check_global_rate_limit(self) -> None:
        rate = self.application.config.rate_limit_global
        decision = await self.application.limiter.hit(f"global:{self.client_ip}", rate)
        self.set_header("X-RateLimit-Limit", str(decision.limit))
        self.set_header("X-RateLimit-Remaining", str(max(0, decision.remaining)))
        if not decision.allowed:
            raise RateLimited(retry_after=decision.retry_after)

    # -- input ------------------------------------------------------------------

    def raw_body(self) -> bytes:
        return b"".join(self._body_chunks)

    async def _parse_body(self, schema_id: str) -> Any:
        content_type = self.request.headers.get("Content-Type", "")
        media_type = content_type.split(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise UnsupportedMediaType("Send the body as application/json")
        raw = self.raw_body()
        if not raw.strip():
            raise ValidationFailed("A JSON body is required", details=[{"field": "(body)", "message": "is required"}])
        if len(raw) <= VALIDATE_ON_LOOP_BYTES:
            return self.application.schemas.validate(schema_id, parse_json(raw))
        return await self.application.run_blocking(
            lambda: self.application.schemas.validate(schema_id, parse_json(raw)))

    def _parse_query(self, schema_id: str) -> dict[str, Any]:
        schema = self.application.schemas.get(schema_id)
        properties = self.application.schemas.object_properties(schema_id)
        values: dict[str, Any] = {}
        details = []
        for name, raw_values in self.request.query_arguments.items():
            texts = [raw.decode("utf-8", "replace") for raw in raw_values]
            if any("\x00" in text for text in texts):
                details.append({"field": name, "message": "must not contain NUL characters"})
                continue
            prop = properties.get(name)
            if prop is None:
                if schema.get("additionalProperties") is False or schema.get("unevaluatedProperties") is False:
                    details.append({"field": name, "message": "is not an allowed query parameter"})
                continue
            try:
                values[name] = _convert_query_value(prop, texts)
            except ValueError:
                details.append({"field": name, "message": f"must be of type {prop.get('type')}"})
        if details:
            raise ValidationFailed("Invalid query parameters", details=details)
        for name, prop in properties.items():
            if name not in values and "default" in prop:
                values[name] = prop["default"]
        return self.application.schemas.validate(schema_id, values)

    # -- output -----------------------------------------------------------------

    def respond(self, data: Any = None, *, status: int = 200, message: str | None = None,
                pagination: dict[str, int] | None = None) -> None:
        """Finish with the success envelope ``{"success": true, "data": …}``."""
        envelope: dict[str, Any] = {"success": True, "data": data}
        if message is not None:
            envelope["message"] = message
        if pagination is not None:
            envelope["pagination"] = pagination
        self.set_status(status)
        self.write_json(envelope)

    def write_json(self, value: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json_dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = as_api_error(kwargs.get("exc_info"), status_code)
        self.set_status(error.status)
        for name, value in error.headers.items():
            self.set_header(name, value)
        envelope = error.envelope()
        if isinstance(error, InternalError) and self.application.config.is_development and kwargs.get("exc_info"):
            envelope["details"] = {"traceback": traceback.format_exception(*kwargs["exc_info"])}
        self.write_json(envelope)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # Client errors are expected outcomes, told by the access log; only real faults get
        # a traceback.
        if isinstance(value, (ApiError, tornado.web.HTTPError)) or isinstance(as_api_error((typ, value, tb), 500), Conflict):
            return
        super().log_exception(typ, value, tb)

    def get_current_user(self) -> Actor | None:
        return self.actor

    def compute_etag(self) -> str | None:
        # API answers are per caller and marked no-store: hashing every body buys nothing.
        return None


def as_api_error(exc_info: Any, status_code: int) -> ApiError:
    """The ``ApiError`` a failure is shown to the client as."""
    error = exc_info[1] if exc_info else None
    if isinstance(error, ApiError):
        return error
    if isinstance(error, peewee.IntegrityError):
        return Conflict("This conflicts with an existing record")
    if isinstance(error, tornado.web.HTTPError):
        return error_for_status(error.status_code, error.reason if error.status_code < 500 else None)
    return error_for_status(status_code)


def _implements(handler_class: type, method: str) -> bool:
    return getattr(handler_class, method.lower()) is not getattr(tornado.web.RequestHandler, method.lower())


def parse_json(raw: bytes | str, *, where: str = "(body)") -> Any:
    """Parse a request body or a WebSocket frame, refusing with ``ValidationFailed`` what JSON
    or our databases cannot hold: malformed or too deeply nested text, NaN and Infinity, NUL
    characters and lone surrogates. The one parser for client JSON."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValidationFailed("Malformed JSON", details=[{"field": where, "message": "is nested too deeply"}]) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ValidationFailed("Malformed JSON", details=[{"field": where, "message": str(error)[:200]}]) from None
    suspicious = (_MAYBE_UNSTORABLE if isinstance(raw, bytes) else _MAYBE_UNSTORABLE_TEXT).search(raw)
    bad = _unstorable_text_at(data) if suspicious else None
    if bad is not None:
        raise ValidationFailed("Invalid characters", details=[
            {"field": bad or where, "message": "must not contain NUL characters or unpaired surrogates"}])
    return data


def _unstorable_text_at(data: Any) -> str | None:
    """The dotted path of the first key or string in ``data`` holding NUL or a lone surrogate
    (``""`` for the top level), else None. Iterative: nesting depth costs no stack."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _UNSTORABLE_TEXT.search(value):
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if _UNSTORABLE_TEXT.search(key):
                    return path
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{index}" if path else str(index), item) for index, item in enumerate(value))
    return None


def _convert_query_value(prop: dict[str, Any], texts: list[str]) -> Any:
    kind = prop.get("type")
    if kind == "array":
        items = [part for text in texts for part in text.split(",") if part != ""]
        return [_convert_scalar(prop.get("items", {}).get("type"), item) for item in items]
    return _convert_scalar(kind, texts[-1])


def _refuse_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and NaN slips past every
    # minimum/maximum and then makes our own answers invalid JSON.
    raise ValueError(f"{name} is not valid JSON")


def _convert_scalar(kind: Any, text: str) -> Any:
    if kind == "integer":
        return int(text)
    if kind == "number":
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(text)
        return number
    if kind == "boolean":
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(text)
    return text


class NotFoundHandler(ApiHandler):
    """Answers every path no route matched with the 404 envelope."""

    def prepare(self) -> Any:  # type: ignore[override]
        self.application.request_started(self)
        self._body_chunks = []
        self._body_size = 0
        self._body_limit = self.application.config.max_json_body
        raise tornado.web.HTTPError(404, reason="No such endpoint")
