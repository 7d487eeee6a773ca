"""The REST handler base: request ids, CORS and security headers, the response envelope,
declared and validated parameters, authentication and permission checks, rate limiting.

Every REST handler, core or plugin, extends ``ApiHandler`` and declares each HTTP method with
``@endpoint(...)``. The declaration is the single source for validation and for OpenAPI.
Errors are raised as ``ApiError``s and rendered in exactly one place, ``write_error``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
import os
import re
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, cast

import tornado.web

from . import early_answers
from .actor import Actor
from .errors import (
    ApiError, Conflict, Forbidden, InternalError, PayloadTooLarge, RateLimited, Unauthorized,
    UnsupportedMediaType, ValidationFailed, as_api_error,
)
from .interfaces import App
from .request_info import (
    BODILESS_METHODS, client_ip, declares_body, in_networks, is_loopback, limit_subject,
)
from .schemas import keyword_message
from .wire import json_dumpb, parse_json

__all__ = ["ApiHandler", "StreamingBodyHandler", "AssetHandler", "HeadLikeGet", "endpoint", "Endpoint", "NotFoundHandler"]

log = logging.getLogger("vachat.web")

REQUEST_ID_HEADER = "X-Request-ID"
# A client-sent request id is echoed only when it is short and plain, so it is safe in logs.
_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
CORS_ALLOWED_HEADERS = "Authorization, Content-Type, X-API-Key, X-Request-ID"
CORS_EXPOSED_HEADERS = "X-Request-ID, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining"
# Browsers may reuse a preflight answer this long (s); short enough that config changes apply.
CORS_MAX_AGE = 600
# Bodies larger than this (bytes) are parsed and validated on a worker thread: checking a
# 1 MiB array item by item costs the IOLoop about two seconds, a small form well under 1 ms.
VALIDATE_ON_LOOP_BYTES = 64 * 1024
# The connection's body cap while a handler counts the body itself (``ApiHandler._accept_body``).
UNCAPPED_BODY = 2 ** 62
# Query strings remembered once parsed and validated (``QueryMemo``), and the longest remembered.
QUERY_MEMO_SIZE = 1024
QUERY_MEMO_MAX_LENGTH = 512
API_CSP = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=31536000; includeSubDomains"


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
    #: Other success statuses answered with the same body (a retry's 200 beside a 201).
    also: tuple[int, ...] = ()
    #: ``False``: the success body is ``response`` itself (or ``media_type`` text), not the envelope.
    envelope: bool = True
    media_type: str = "application/json"
    #: Schema id of error bodies; ``None``: the statuses in ``errors`` answer with the success
    #: body (a health report's 503 is the report).
    error_response: str | None = "core/error"


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
    also: tuple[int, ...] = (),
    envelope: bool = True,
    media_type: str = "application/json",
    error_response: str | None = "core/error",
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Declare a handler method: who may call it, what it takes and what it answers.

    Before the method runs, the caller is authenticated (``auth``) and checked for
    ``permission``; ``self.body`` holds the body validated against ``body`` and ``self.query``
    the query string converted and validated against ``query``.
    """
    spec = Endpoint(summary, body, query, response, auth or bool(permission), permission, status,
                    tuple(tags), description, tuple(errors), tuple(also), envelope, media_type, error_response)

    def decorate(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def wrapper(self: "ApiHandler", *args: Any, **kwargs: Any) -> Any:
            if self._finished:  # answered while the body streamed in (413): nothing left to do
                return None
            if not self._authorized:
                await self._authorize(spec)
            if spec.query:
                self.query = self._parse_query(spec.query)
            if spec.body:
                self.body = await self._parse_body(spec.body)
            return await method(self, *args, **kwargs)

        wrapper.endpoint = spec  # type: ignore[attr-defined]
        return wrapper

    return decorate


class QueryMemo:
    """Query strings already parsed and validated, per query schema (least recently used out).

    Clients ask the same few queries again and again (a list's first page), and checking one
    through jsonschema cost a list request 7 % of its time. A query's parameters depend only
    on its text and its schema, so they are computed once; each caller gets its own copy.
    Refused queries are not remembered, nor long ones (they would crowd out the rest)."""

    def __init__(self, size: int = QUERY_MEMO_SIZE) -> None:
        self.size = size
        self._entries: collections.OrderedDict[tuple[str, str], dict[str, Any]] = collections.OrderedDict()

    def get(self, schema_id: str, query: str, parse: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        key = (schema_id, query)
        values = self._entries.get(key)
        if values is None:
            values = parse()
            if len(query) > QUERY_MEMO_MAX_LENGTH:
                return values
            self._entries[key] = values
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return {name: list(value) if isinstance(value, list) else value for name, value in values.items()}


def _endpoint_of(handler: tornado.web.RequestHandler) -> Endpoint | None:
    name = "get" if handler.request.method == "HEAD" else handler.request.method.lower()
    method = getattr(type(handler), name, None)
    return getattr(method, "endpoint", None)


class HeadLikeGet:
    """``HEAD`` on every route that has a ``GET``: the GET runs and Tornado sends its status and
    headers (``Content-Length`` included) without the body. Load balancers probe with HEAD."""

    async def head(self, *args: Any, **kwargs: Any) -> None:
        if not _implements(type(self), "GET"):
            raise tornado.web.HTTPError(405)
        await self.get(*args, **kwargs)  # type: ignore[attr-defined]


@tornado.web.stream_request_body
class ApiHandler(HeadLikeGet, tornado.web.RequestHandler):
    """Base of every REST handler. The body is buffered for ``@endpoint(body=…)`` and capped at
    ``MAX_JSON_BODY`` (the connection's own cap); ``max_body_size`` may lower that. A handler
    that takes larger bodies streams them: see ``StreamingBodyHandler``."""

    #: Bytes of body accepted, at most ``MAX_JSON_BODY``; ``None`` means ``MAX_JSON_BODY``.
    max_body_size: int | None = None
    #: Count requests against the per-IP global limit.
    rate_limited: bool = True
    #: Response headers of this handler's own that browsers may read (CORS), besides the core's.
    exposed_headers: tuple[str, ...] = ()

    #: Whether ``prepare`` lets the body in (``_accept_body``); a handler that must check the
    #: caller first (``StreamingBodyHandler``) lets it in itself.
    body_accepted_in_prepare: bool = True

    actor: Actor | None = None
    body: Any = None
    query: dict[str, Any]
    _authorized = False

    @property
    def app(self) -> App:
        """The application as the plugin API describes it (``vachat.interfaces.App``)."""
        return cast(App, self.application)  # a VachatApplication, which implements App

    @property
    def caller(self) -> Actor:
        """The authenticated caller of an ``@endpoint`` with ``auth`` (the default), which never
        runs without one; ``Unauthorized`` when a handler without auth asks for it."""
        if self.actor is None:
            raise Unauthorized()
        return self.actor

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
            self.set_header("Access-Control-Expose-Headers",
                            ", ".join((CORS_EXPOSED_HEADERS, *self.exposed_headers)))
            self.add_header("Vary", "Origin")

    async def prepare(self) -> None:
        self.query = {}
        self._body_chunks: list[bytes] = []
        self._body_size = 0
        self.application.request_started(self)
        limit = self._body_limit = self.body_limit()
        try:
            declared = early_answers.checked_length(self.request)
        except ValidationFailed as error:
            malformed: ValidationFailed | None = error  # answered after the rate limit counts it
        else:
            malformed = None
            if self.request.method in BODILESS_METHODS and declares_body(self.request):
                raise PayloadTooLarge(f"A {self.request.method} request takes no body")
            if declared is not None and declared > limit:
                raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
        if self.rate_limited and self.request.method != "OPTIONS":
            await self._check_global_rate_limit()
        if malformed is not None:
            raise malformed
        if self.body_accepted_in_prepare:
            self._accept_body()

    def _accept_body(self) -> None:
        """Let this request's body in: from here its own count (``data_received``) holds it to
        ``body_limit()`` and answers 413 with the envelope. The connection's cap, which stays
        at ``MAX_JSON_BODY`` until now, judges a chunked body by the sizes its chunks declare
        and answers a bare 400 without our envelope, so it is lifted for this request; Tornado
        hands streaming handlers (all of ours) every chunk in pieces, so memory stays bounded."""
        self.request.connection.set_max_body_size(UNCAPPED_BODY)

    def body_limit(self) -> int:
        """Bytes of body this request may carry."""
        json_limit = self.application.config.max_json_body
        return min(self.max_body_size or json_limit, json_limit)

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

    def finish(self, chunk: Any = None) -> "asyncio.Future[None]":
        """Finish the response. One given before the body was read (a refusal in ``prepare`` or
        mid-body) never resets the connection: see ``vachat.early_answers``."""
        if self._finished or not early_answers.body_pending(self.request):
            return super().finish(chunk)
        # The connection's own cap would answer the rest with a bare 400 after ours: what is
        # left to read is bounded by ``early_answers`` instead.
        self.request.connection.set_max_body_size(UNCAPPED_BODY)
        received = getattr(self, "_body_size", 0)
        if early_answers.plan(self.request, received) == early_answers.CLOSE:
            self.set_header("Connection", "close")
            sock = early_answers.keep_socket_open(self.request)
            sent = super().finish(chunk)
            if sock is not None:
                early_answers.linger_and_close(sock, sent)
            return sent
        with early_answers.connection_kept(self.request):
            sent = super().finish(chunk)
        early_answers.drain_within_deadline(self.request, received)
        return sent

    def on_connection_close(self) -> None:
        """The client hung up. If its body had not all arrived, this request never runs its
        method nor reaches ``on_finish``: it leaves the in-flight set here, and drops the body
        held so far, or both would stay for the life of the process (and a shutdown would wait
        its whole grace period for it). A request whose method is already running still ends
        in ``on_finish``, and counts as in flight until then."""
        # Tornado resolves this future once the body is complete; its own
        # ``on_connection_close`` fails it, which ends the request without running the method.
        body = getattr(self.request, "_body_future", None)
        abandoned = body is not None and not body.done()
        super().on_connection_close()
        if abandoned and not self._finished:
            self._body_chunks = []
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
    def client_limit_subject(self) -> str:
        """The client as per-IP rate limits count it (IPv6 by /64): see ``limit_subject``."""
        return limit_subject(self.client_ip)

    @property
    def is_https(self) -> bool:
        if self.request.protocol == "https":
            return True
        trusted = self.application.trusted_networks
        return bool(trusted) and in_networks(self.request.remote_ip or "", trusted) and \
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
        decision = await self.application.limiter.hit(f"global:{self.client_limit_subject}", rate)
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
        return self.application.query_memo.get(schema_id, self.request.query, functools.partial(self._parse_query_arguments, schema_id))

    def _parse_query_arguments(self, schema_id: str) -> dict[str, Any]:
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
                details.append({"field": name, "message": keyword_message("type", prop.get("type"))})
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
        self.finish(json_dumpb(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = as_api_error(kwargs.get("exc_info"), status_code)
        self.set_status(error.status)
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.write_api_error(error, kwargs.get("exc_info"))

    def write_api_error(self, error: ApiError, exc_info: Any = None) -> None:
        """Write the body of an error answer; its status and headers are set. The error
        envelope, unless a handler speaking another protocol's error shape overrides this (the
        OpenAI-compatible API does)."""
        envelope = error.envelope()
        if isinstance(error, InternalError) and exc_info and self._may_see_tracebacks():
            # Beside ``details``, which is always the list of failing fields.
            envelope["traceback"] = traceback.format_exception(*exc_info)
        self.write_json(envelope)

    def _may_see_tracebacks(self) -> bool:
        """Only a developer on this machine: development mode, a loopback peer, and no proxy
        in between (a proxy on loopback forwards strangers, trusted or not)."""
        request = self.request
        if not self.application.config.is_development or not is_loopback(request.remote_ip or ""):
            return False
        return not any(name in request.headers for name in ("X-Forwarded-For", "X-Real-IP", "Forwarded"))

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


def _implements(handler_class: type, method: str) -> bool:
    if method == "HEAD":
        return _implements(handler_class, "GET")
    return getattr(handler_class, method.lower()) is not getattr(tornado.web.RequestHandler, method.lower())


def _convert_query_value(prop: dict[str, Any], texts: list[str]) -> Any:
    kind = prop.get("type")
    if kind == "array":
        items = [part for text in texts for part in text.split(",") if part != ""]
        return [_convert_scalar(prop.get("items", {}).get("type"), item) for item in items]
    return _convert_scalar(kind, texts[-1])


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


@tornado.web.stream_request_body
class StreamingBodyHandler(ApiHandler):
    """Base of a REST handler whose body is an upload, streamed chunk by chunk to
    ``receive_chunk`` (to disk, a hash, a parser) and never held in memory.

    The server caps every body at ``MAX_JSON_BODY`` until a handler lets it in. This handler
    takes up to its own ``max_body_size``, for its own request only, and lets the body in only
    after the caller passed its ``@endpoint``'s authentication and permission check (done here,
    before the body, rather than after it as for JSON handlers): a stranger never gets more
    than the JSON limit read. A body over the cap is a 413, up front when its Content-Length says so,
    else the moment the count passes it. Its ``@endpoint``s declare no ``body=`` schema (there
    is no buffered body to validate); the method runs once the whole body has arrived.

    Set the cap as a class attribute, or per route: ``(r"/api/files", Upload, {"max_body_size": n})``.
    ``HTTP_BODY_TIMEOUT`` still bounds how long the whole body may take.
    """

    #: Bytes of body accepted (required): may exceed ``MAX_JSON_BODY``.
    max_body_size: int | None = None
    body_accepted_in_prepare = False  # only once the caller is authorised

    def initialize(self, max_body_size: int | None = None) -> None:
        if max_body_size is not None:
            self.max_body_size = max_body_size

    def body_limit(self) -> int:
        if self.max_body_size is None:
            raise TypeError(f"{type(self).__name__} must set max_body_size")
        return self.max_body_size

    async def prepare(self) -> None:
        await super().prepare()
        if self._finished:
            return
        spec = _endpoint_of(self)
        if spec is not None:
            await self._authorize(spec)
            self._authorized = True
        self._accept_body()

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._finished:
            return None
        self._body_size += len(chunk)
        if self._body_size > self._body_limit:
            self.send_error(413, exc_info=(PayloadTooLarge, PayloadTooLarge(f"Request body exceeds {self._body_limit} bytes"), None))
            return None
        return self.receive_chunk(chunk)

    def receive_chunk(self, chunk: bytes) -> Awaitable[None] | None:
        """Consume the next piece of the body. Return an awaitable to pause reading until it
        is done (flow control: a slow disk then slows the sender instead of filling memory)."""
        raise NotImplementedError


class NotFoundHandler(ApiHandler):
    """Answers every path no route matched with the 404 envelope."""

    def prepare(self) -> Any:  # type: ignore[override]
        self.application.request_started(self)
        self._body_chunks = []
        self._body_size = 0
        self._body_limit = self.application.config.max_json_body
        raise tornado.web.HTTPError(404, reason="No such endpoint")


class AssetHandler(tornado.web.StaticFileHandler):
    """A page's own files (scripts, styles, images), served by name from a fixed list with
    the page's content security policy; any other name is a 404 in the error envelope, so no
    path can reach a file the list does not name. ETags, ``Range`` and ``HEAD`` as Tornado's
    ``StaticFileHandler`` gives them.

    Route keyword arguments: ``assets`` (the name a page asks for → the file), ``csp`` and
    ``max_age`` (seconds browsers may keep a file; 0: revalidate every time).
    """

    def initialize(self, assets: Mapping[str, str | Path], csp: str, max_age: int = 0) -> None:  # type: ignore[override]
        super().initialize(path=os.sep)
        self._assets = {name: os.path.abspath(path) for name, path in assets.items()}
        self._csp = csp
        self._max_age = max_age

    def parse_url_path(self, url_path: str) -> str:
        return self._assets.get(url_path, "")

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if absolute_path not in self._assets.values():
            raise tornado.web.HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Content-Security-Policy", self._csp)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", f"public, max-age={self._max_age}" if self._max_age else "no-cache")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json_dumpb({"success": False, "error": "Not found", "code": "NOT_FOUND"}))
