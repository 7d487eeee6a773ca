"""The WebSocket endpoint ``/ws``: authentication, frame dispatch, replies, limits.

A socket authenticates on the upgrade (``Authorization: Bearer`` / ``X-API-Key``) or with a
first frame ``{"type": "auth", "data": {"token": …}}`` within ``ws_auth_timeout`` seconds;
anything else first, a bad token or the timeout closes it with 4401. A refused ``Origin``
closes it with 4403. Once authenticated it joins ``user:<id>`` and gets ``ready``
``{userId, sessionId, protocol}`` (``PROTOCOL_VERSION``).

Client frames are JSON text ``{"type", "id"?, "data"?}``; each is checked (JSON object, type,
known event, permission, rates, schema) and handed to its ``@ws_event`` handler with an
``EventContext``. A frame with an ``id`` gets exactly one reply with that id: ``ack`` (the
handler's return value as data), ``error`` ``{code, message, details?}``, or the reply type a
handler chose with ``Reply`` (``ping`` answers ``pong``). Errors for frames without an id are
sent too, without an id. None of these failures closes the socket.

Once open, a socket keeps nothing of its upgrade request but ``client_ip`` and ``actor``: the
headers (``request.headers`` is empty) and the HTTP connection objects are let go, as idle
sockets live for hours; what a socket needs of them is read in ``prepare()``.

Handlers of one socket run one at a time, in arrival order (Tornado reads the next frame when
the previous handler finished), so a handler must hand long work (AI generation) to a task.

Limits, and who enforces them:

- ``websocket_max_message_size`` (Tornado, from ``ws_max_message_size``): a larger frame makes
  Tornado 6.6 write a close frame ``1009 "message too big"`` and then abort the TCP connection
  at once, without reading the payload (``WebSocketProtocol13._receive_frame``). Whether the
  client sees 1009 or an abrupt close (1006, no code) depends on whether the close frame
  reaches it before the reset caused by the unread payload.
- ``ws_ping_interval`` / ``ws_ping_timeout`` (the hub's ``Pinger``, one timer for every
  socket): sockets are pinged; one that does not pong in time is closed (1000 "ping timed
  out"), then dropped by Tornado after 5 s.
- ``ws_rate_limit`` (here, a token bucket per socket on every frame) and ``EventSpec.rate``
  (per socket and event type): a refused frame gets ``RATE_LIMITED``; a socket that keeps
  sending refused frames (``FLOOD_CLOSE_FACTOR`` times its limit) is closed with 4429.
- ``ws_outbound_limit`` (the hub): a socket too slow to read what it is sent gets 4408.
- Upgrades (here, before any credential is looked up): each counts against
  ``rate_limit_global`` like a REST request; at most ``ws_max_per_ip`` sockets are open or
  opening per client address (IPv6 per /64) and ``ws_max_per_user`` per user, on this node.
  Past a limit the upgrade is answered HTTP 429 with ``Retry-After``; a socket that
  authenticates by frame past its user's cap is closed with 4429.

This module must never block the IOLoop, never run a handler for an unauthenticated socket
(``auth`` excepted), never send a second reply for one id, never let a handler's failure
close the socket or reach Tornado (which would abort the connection), and never encode an
outgoing frame itself: every frame goes through the hub, in order.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from typing import Any, Awaitable

import tornado.web
import tornado.websocket
from tornado.httputil import HTTPHeaders
from tornado.ioloop import IOLoop

from . import early_answers
from .config import Rate
from .errors import (
    ApiError, Forbidden, InternalError, PayloadTooLarge, RateLimited, TokenExpired, Unauthorized,
    UnknownEvent, ValidationFailed, as_api_error,
)
from .events import EventSpec, server_event, ws_event
from .hub import CLOSE_TOO_SLOW
from .actor import Actor
from .interfaces import App, Hub
from .request_info import client_ip, declares_body, limit_subject
from .wire import json_dumps, parse_json

__all__ = [
    "SocketHandler", "EventContext", "Reply", "CORE_EVENTS", "TokenBucket", "SocketsPerAddress",
    "CLOSE_UNAUTHORIZED", "CLOSE_ORIGIN_REFUSED", "CLOSE_TOO_MANY", "CLOSE_GOING_AWAY", "PROTOCOL_VERSION",
    "CLOSE_CODES", "CORE_SERVER_EVENTS",
]

log = logging.getLogger("vachat.ws")

# The version of the /ws protocol this server speaks, sent in ``ready``. Raised only by a change
# an existing client would misread (a frame's meaning, not an added field or event), so a client
# can refuse, with a clear message, a server newer than it understands instead of misbehaving.
PROTOCOL_VERSION = 1

CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013
CLOSE_UNAUTHORIZED = 4401
CLOSE_ORIGIN_REFUSED = 4403
CLOSE_TOO_MANY = 4429

#: Every close code the server uses, with what it means (docs/websocket.md, the AsyncAPI document).
CLOSE_CODES = {
    CLOSE_GOING_AWAY: "The server is shutting down: reconnect (another node will answer)",
    1009: "A frame was larger than WS_MAX_MESSAGE_SIZE",
    CLOSE_INTERNAL: "An internal error",
    CLOSE_TRY_AGAIN: "The server could not check the credentials just now (its database or cache is unavailable): try again",
    CLOSE_UNAUTHORIZED: "Not authenticated: no or a bad token, the auth timeout, or the session ended (logout, password change, account disabled or deleted)",
    CLOSE_ORIGIN_REFUSED: "The page's Origin is not allowed (CORS_ORIGIN)",
    CLOSE_TOO_SLOW: "The socket read too slowly: more than WS_OUTBOUND_LIMIT bytes were waiting for it",
    CLOSE_TOO_MANY: "Too many sockets for this user, or too many frames refused for their rate",
}

AUTH_EVENT = "auth"
# A socket is closed (4429) once its refused frames exceed this many times its rate within one
# rate period: a client that honours RATE_LIMITED never gets near it, a flood hits it within
# a second or so, and each refused frame before then still costs us a parse and a reply.
FLOOD_CLOSE_FACTOR = 3
# Request ids are echoed back in replies; bounding them keeps a client from making the server
# echo (and log) arbitrary amounts of data. 128 fits a UUID with any sensible prefix.
MAX_ID_LENGTH = 128
# RFC 6455 §5.5: a close frame's payload is at most 125 bytes, 2 of them the code.
MAX_CLOSE_REASON_BYTES = 123
# Retry-After (s) when an upgrade is refused for too many open sockets: no rate refills that
# count, a socket closing does, and a reconnect loop should back off well past a heartbeat.
SOCKET_CAP_RETRY_AFTER = 30
TOO_MANY_FOR_USER = "Too many connections for this user"


class SocketsPerAddress:
    """Sockets open or opening per client address on this node. A slot is taken when the
    upgrade request arrives, before its credentials are resolved, so concurrent upgrades from
    one address cannot all slip under the cap while they wait on the database."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def take(self, address: str, cap: int) -> bool:
        count = self._open.get(address, 0)
        if count >= cap:
            return False
        self._open[address] = count + 1
        return True

    def give_back(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)

    def __len__(self) -> int:
        return len(self._open)


class _ForgottenHeaders(HTTPHeaders):
    """The headers of a socket's upgrade once it is open: empty, and refusing writes (one
    instance is shared by every open socket)."""

    def add(self, name: str, value: str, *args: Any, **kwargs: Any) -> None:
        raise TypeError("an open socket's upgrade headers are gone")

    def __setitem__(self, name: str, value: str) -> None:
        raise TypeError("an open socket's upgrade headers are gone")

    def __delitem__(self, name: str) -> None:
        raise TypeError("an open socket's upgrade headers are gone")


_UPGRADE_FORGOTTEN = _ForgottenHeaders()


def sockets_per_address(app: Any) -> SocketsPerAddress:
    """The application's count, made on first use."""
    counter = getattr(app, "_ws_sockets_per_address", None)
    if counter is None:
        counter = app._ws_sockets_per_address = SocketsPerAddress()
    return counter


class Reply:
    """Returned by a handler to answer with another frame type than ``ack`` (``pong``).

    The reply carries the request's id when it had one, and is sent even when it had none.
    """

    __slots__ = ("type", "data")

    def __init__(self, type: str, data: Any = None) -> None:
        self.type = type
        self.data = data


class TokenBucket:
    """``rate.count`` frames at once, refilled at ``rate.count / rate.period`` per second."""

    __slots__ = ("capacity", "refill", "tokens", "stamp")

    def __init__(self, rate: Rate, factor: int = 1) -> None:
        self.capacity = float(rate.count * factor)
        self.refill = rate.count * factor / rate.period
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self, now: float) -> bool:
        tokens = self.tokens + (now - self.stamp) * self.refill
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = (tokens if tokens < self.capacity else self.capacity) - 1.0
            return True
        self.tokens = tokens
        return False

    def retry_after(self) -> float:
        """Seconds until the next frame would be taken."""
        return max(0.0, (1.0 - self.tokens) / self.refill)


class EventContext:
    """What an event handler gets besides its ``data``: one per socket."""

    __slots__ = ("app", "socket")

    def __init__(self, app: App, socket: "SocketHandler") -> None:
        self.app = app
        self.socket = socket

    @property
    def actor(self) -> Actor:
        """The socket's caller. Every event but the core's ``auth`` runs only once the socket
        is authenticated, so a plugin's handler always has one."""
        if self.socket.actor is None:
            raise Unauthorized("Authenticate this socket first (send an auth frame)")
        return self.socket.actor

    @property
    def hub(self) -> Hub:
        return self.app.hub

    @property
    def rooms(self) -> set[str]:
        """The rooms this socket is in (on this node)."""
        return self.app.hub.rooms_of(self.socket)

    def join(self, room: str, *, hold: bool = False) -> Awaitable[None]:
        """Join ``room`` now; await to be sure other nodes' events reach this socket too.
        ``hold``: keep the room's frames aside until ``hub.release(ctx.socket, room, …)``."""
        return self.app.hub.join(self.socket, room, hold=hold)

    def leave(self, room: str) -> None:
        self.app.hub.leave(self.socket, room)

    @property
    def frame_id(self) -> Any:
        """The ``id`` of the frame being handled (None when it had none: no ``ack`` will be
        sent; a handler that must answer anyway returns a ``Reply`` event)."""
        return self.socket._frame_id

    def after_reply(self, callback: Any) -> None:
        """Run ``callback()`` right after the reply to the frame being handled went out (its
        ``ack`` or ``error``; at once for a frame without an id, after the handler). For work
        that must follow the answer on the wire, such as ``hub.release`` of a held room."""
        socket = self.socket
        if socket._after_reply is None:
            socket._after_reply = [callback]
        else:
            socket._after_reply.append(callback)

    def send(self, event_type: str, data: Any = None) -> bool:
        """Send an event to this socket only."""
        return self.app.hub.send(self.socket, event_type, data)

    async def publish(self, room: str, event_type: str, data: Any, *, exclude_self: bool = False) -> int:
        """Send an event to every member of ``room`` on every node."""
        return await self.app.hub.publish(room, event_type, data,
                                          exclude=self.socket if exclude_self else None)


@tornado.web.stream_request_body
class SocketHandler(tornado.websocket.WebSocketHandler):
    """``/ws``: one instance per socket. See the module docstring for the protocol.

    The upgrade is a GET without a body. Streaming mode lets that be enforced before any body
    is read: another method is a 405 and a declared body a 413, both answered at once (and the
    connection then closed unread), so a stranger cannot make the server buffer anything. A
    ``Content-Length`` that cannot be read is the 400 the REST routes answer it with.
    """

    SUPPORTED_METHODS = ("GET",)  # type: ignore[assignment]
    # An idle socket keeps its handler for hours. Tornado's own attributes stay in the
    # instance's __dict__; with ours too it held 39 keys, past the 30 that CPython shares
    # between instances, and became a full 1.5 KiB table per socket. Ours are slots instead.
    # What only a socket that sends frames needs (its rate bucket, its handlers' context, the
    # after-reply list) is made on its first frame: every object an idle socket holds is walked
    # by each full garbage collection, and Python 3.11's are not incremental (10,000 idle sockets
    # cost ~0.6 µs of such a pause per object, see bench/README.md).
    __slots__ = ("client_ip", "actor", "hub", "_ctx", "_events", "_schemas", "_bucket", "_flood",
                 "_event_buckets", "_after_reply", "_frame_id", "_refusal", "_peer", "_auth_timer",
                 "_address_slot")
    client_ip: str
    actor: Actor | None
    hub: Hub
    _ctx: EventContext | None
    _events: Any
    _schemas: Any
    _bucket: TokenBucket | None
    _flood: TokenBucket | None  # made on the first refused frame
    _event_buckets: dict[str, TokenBucket]
    _after_reply: list[Any] | None
    _frame_id: Any
    _refusal: tuple[int, str] | None
    _peer: Any
    _auth_timer: object | None
    _address_slot: str | None  # the address whose socket count this upgrade holds

    def initialize(self) -> None:
        # Called by RequestHandler.__init__: what may be read before open().
        self.actor = None
        self._address_slot = None
        self._frame_id = None
        self._refusal = None
        self._peer = None
        self._auth_timer = None
        self._flood = None

    # -- the upgrade -------------------------------------------------------------------

    def check_origin(self, origin: str) -> bool:
        # Tornado would answer a refused origin with HTTP 403, which a browser's WebSocket API
        # cannot show; a refused origin gets close code 4403, so the check happens in prepare()/open().
        return True

    def get_compression_options(self) -> dict[str, Any] | None:
        # No permessage-deflate: the hub sends one prebuilt uncompressed frame to every member,
        # and per-socket compressors would cost CPU and memory on every fan-out.
        return None

    async def prepare(self) -> None:
        app = self.application
        self.client_ip = client_ip(self.request.remote_ip or "", self.request.headers,
                                   app.trusted_networks)
        # A length that cannot be read is the REST routes' 400, not a body to refuse with 413.
        early_answers.checked_length(self.request)
        if declares_body(self.request):
            raise PayloadTooLarge("A WebSocket upgrade takes no body")
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            return  # WebSocketHandler.get() answers 400
        await self._admit(limit_subject(self.client_ip))
        origin = self.request.headers.get("Origin")
        if origin and not app.origin_allowed(origin, self.request):
            self._refusal = (CLOSE_ORIGIN_REFUSED, "Origin not allowed")
            return
        try:
            self.actor = await app.resolve_actor(self.request.headers, self.client_ip)
        except (Unauthorized, TokenExpired) as error:
            self._refusal = (CLOSE_UNAUTHORIZED, error.message)
        except ApiError as error:  # Unavailable (database down) and friends: retry later
            self._refusal = (CLOSE_TRY_AGAIN, error.message)
        except Exception:
            log.exception("resolving the credentials of a WebSocket upgrade failed")
            self._refusal = (CLOSE_INTERNAL, "Internal server error")
        else:
            headers = self.request.headers
            if self.actor is None and (headers.get("Authorization") or headers.get("X-API-Key")):
                self._refusal = (CLOSE_UNAUTHORIZED, "Invalid credentials")
            elif self.actor is not None and self._user_at_cap(self.actor.id):
                # Refused as HTTP while that is still possible; authenticated() checks again,
                # exactly, once the socket is open.
                raise RateLimited(TOO_MANY_FOR_USER, retry_after=SOCKET_CAP_RETRY_AFTER)

    async def _admit(self, address: str) -> None:
        """Count the upgrade against the per-IP request rate and take a socket slot for its
        address, or refuse it (429) before anything costlier happens."""
        app = self.application
        decision = await app.limiter.hit(f"global:{address}", app.config.rate_limit_global)
        if not decision.allowed:
            raise RateLimited(retry_after=decision.retry_after)
        if not sockets_per_address(app).take(address, app.config.ws_max_per_ip):
            raise RateLimited("Too many connections from this address", retry_after=SOCKET_CAP_RETRY_AFTER)
        self._address_slot = address

    def _release_address_slot(self) -> None:
        if self._address_slot is not None:
            sockets_per_address(self.application).give_back(self._address_slot)
            self._address_slot = None

    def _user_at_cap(self, user_id: str) -> bool:
        return self.application.hub.connection_count_of(user_id) >= self.application.config.ws_max_per_user

    def on_finish(self) -> None:
        # Also called when the upgrade succeeds (101); the socket then keeps its slot until
        # on_close. Any other answer (a refusal, a failed handshake) gives it back now.
        if self.get_status() != 101:
            self._release_address_slot()

    def data_received(self, chunk: bytes) -> None:
        pass  # never called: prepare() refuses any request that declares a body

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A refused upgrade answers with the REST error envelope."""
        error = as_api_error(kwargs.get("exc_info"), status_code)
        self.set_status(error.status)
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json_dumps(error.envelope()))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (ApiError, tornado.web.HTTPError)):
            return  # a refusal, told by the access log
        super().log_exception(typ, value, tb)

    async def open(self, *args: Any, **kwargs: Any) -> None:
        app = self.application
        self.set_nodelay(True)  # else a broadcast then an ack waits ~40 ms on delayed ACKs
        self._forget_the_upgrade()
        self.hub = app.hub
        self._ctx = None
        self._events = app.events
        self._schemas = app.schemas
        config = app.config
        self._bucket = None  # made full on the first frame: as full as one made now would be then
        self._event_buckets = {}  # an empty dict is not tracked by the collector
        self._after_reply = None
        self._peer = self.hub.attach(self)
        if getattr(app, "shutting_down", False):
            self._refusal = (CLOSE_GOING_AWAY, "Server shutting down")
        if self._refusal is not None:
            self._close(*self._refusal)
            return
        if self.actor is not None:
            await self.authenticated(self.actor)
        else:
            self._auth_timer = IOLoop.current().call_later(config.ws_auth_timeout, self._auth_timed_out)

    def _forget_the_upgrade(self) -> None:
        """Let go of what only the upgrade needed, ~3.5 KiB per idle socket: the handshake is
        done, the stream detached from the HTTP connection, the access line written. What the
        socket needs of the request (``client_ip``, ``actor``) was kept apart in prepare().

        The request's headers and the 101 response's; the HTTP/1.1 connection objects the
        request points to (they hold the headers again, the connection's context and its
        serving task: nothing reads them once the stream is detached); the finished future of
        the streamed body (there is none: prepare() refuses one); the template namespace,
        which Tornado itself drops at close."""
        request = self.request
        headers, request.headers = request.headers, _UPGRADE_FORGOTTEN
        # Tornado's WebSocketHandler.get() keeps the request's headers in a local variable for
        # the socket's whole life (its coroutine runs the frame loop): empty them in place.
        try:
            headers._as_list.clear()  # type: ignore[attr-defined]
            headers._combined_cache.clear()  # type: ignore[attr-defined]
        except AttributeError:  # another Tornado: the public, slower way
            headers.clear()
        request.connection = None
        request.server_connection = None
        body = getattr(request, "_body_future", None)
        if body is not None and body.done():
            request._body_future = None  # type: ignore[attr-defined]
        self._headers = _UPGRADE_FORGOTTEN
        self.ui = None  # type: ignore[assignment]
        # Read by _execute() before get() ran, and never again: a list and the resolved
        # future of prepare() that the collector would otherwise walk for the socket's life.
        self.path_args = ()  # type: ignore[assignment]
        prepared = self._prepared_future
        if prepared is not None and prepared.done():
            self._prepared_future = None

    async def authenticated(self, actor: Actor) -> bool:
        """Bind ``actor`` to this socket: index it, join ``user:<id>``, send ``ready``. False
        (and the socket closed with 4429) when the user already has ``ws_max_per_user``."""
        self._cancel_auth_timer()
        if self._user_at_cap(actor.id):  # no await between this check and identify(): exact
            self._close(CLOSE_TOO_MANY, TOO_MANY_FOR_USER)
            return False
        self.actor = actor
        self.hub.identify(self, actor.id, actor.session_id)
        await self.hub.join(self, f"user:{actor.id}")
        self.hub.send(self, "ready", {"userId": actor.id, "sessionId": actor.session_id,
                                      "protocol": PROTOCOL_VERSION})
        return True

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if self.actor is None:
            self._close(CLOSE_UNAUTHORIZED, "Authentication timed out")

    def _cancel_auth_timer(self) -> None:
        if self._auth_timer is not None:
            IOLoop.current().remove_timeout(self._auth_timer)
            self._auth_timer = None

    @property
    def ctx(self) -> EventContext:
        """What this socket's event handlers get: one per socket, made on its first event."""
        ctx = self._ctx
        if ctx is None:
            ctx = self._ctx = EventContext(self.application, self)
        return ctx

    @property
    def is_closing(self) -> bool:
        peer = self._peer
        return peer is None or peer.closing

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if reason is not None:
            reason = reason.encode("utf-8")[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")
        super().close(code, reason)

    def _close(self, code: int, reason: str) -> None:
        """Close through the hub, which counts and logs the server's verdicts."""
        self.hub.close(self, code, reason)

    def on_pong(self, data: bytes) -> None:
        peer = self._peer
        if peer is not None:
            peer.awaiting_pong = False

    def on_close(self) -> None:
        self._release_address_slot()
        self._cancel_auth_timer()
        if self._peer is not None:
            self.hub.detach(self)  # leaves every room
        # The hub's record and the handlers' context point back at this socket: let go of
        # them, so that a closed socket is freed at once rather than by a full collection.
        self._peer = self._ctx = None

    # -- frames ------------------------------------------------------------------------

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        """Check a frame and start its handler. Returns the handler's coroutine (Tornado awaits
        it before reading the next frame) or None when the frame was answered here. Never
        raises: an exception here would make Tornado abort the connection."""
        if self.is_closing:
            return None
        now = time.monotonic()
        bucket = self._bucket
        if bucket is None:
            bucket = self._bucket = TokenBucket(self.application.config.ws_rate_limit)
        if not bucket.take(now):
            return self._refuse(bucket, now, message=message)
        if type(message) is not str:
            return self._fail(None, ValidationFailed("Frames must be JSON text, not binary"))
        try:
            frame = parse_json(message, where="(frame)")
        except ValidationFailed as error:
            return self._fail(_peek_id(message), error)
        if type(frame) is not dict:
            return self._fail(None, ValidationFailed("A frame must be a JSON object"))
        frame_id = frame.get("id")
        if frame_id is not None and not _valid_id(frame_id):
            return self._fail(None, ValidationFailed(
                f"id must be a string of at most {MAX_ID_LENGTH} characters or an integer",
                details=[{"field": "id", "message": "is invalid"}]))
        event_type = frame.get("type")
        if type(event_type) is not str or not event_type:
            return self._fail(frame_id, ValidationFailed(
                "A frame needs a type", details=[{"field": "type", "message": "is required"}]))
        actor = self.actor
        if actor is None and event_type != AUTH_EVENT:
            return self._fail(frame_id, Unauthorized("Authenticate first: send an auth frame"))
        spec: EventSpec | None = self._events.get(event_type)
        if spec is None:
            return self._fail(frame_id, UnknownEvent(f"Unknown event type {event_type[:64]!r}"))
        if spec.permission and (actor is None or not actor.has(spec.permission)):
            return self._fail(frame_id, Forbidden(f"Missing permission {spec.permission}"))
        if spec.rate is not None:
            bucket = self._event_buckets.get(event_type)
            if bucket is None:
                bucket = self._event_buckets[event_type] = TokenBucket(spec.rate)
            if not bucket.take(now):
                return self._refuse(bucket, now, frame_id=frame_id)
        data = frame.get("data", {})  # absent data is an empty object, so schemas say what is missing
        if spec.schema:
            try:
                self._schemas.validate(spec.schema, data)
            except ValidationFailed as error:
                return self._fail(frame_id, error)
            except Exception:
                log.exception("validating %s against %s failed", event_type, spec.schema)
                return self._fail(frame_id, InternalError())
        return self._run(spec, data, frame_id)

    async def _run(self, spec: EventSpec, data: Any, frame_id: Any) -> None:
        self._frame_id = frame_id
        try:
            await self._dispatch(spec, data, frame_id)
        finally:
            self._frame_id = None
            callbacks, self._after_reply = self._after_reply, None
            for callback in callbacks or ():
                try:
                    callback()
                except Exception:
                    log.exception("an after-reply callback of WebSocket event %s failed", spec.type)

    async def _dispatch(self, spec: EventSpec, data: Any, frame_id: Any) -> None:
        try:
            result = spec.handler(self.ctx, data)
            if inspect.isawaitable(result):
                result = await result
        except ApiError as error:
            self._fail(frame_id, error)
            return
        except Exception:
            log.exception("WebSocket event %s failed", spec.type,
                          extra={"plugin": spec.plugin, "userId": getattr(self.actor, "id", None)})
            self._fail(frame_id, InternalError())
            return
        if self.actor is None:  # only `auth` runs unauthenticated; it must have authenticated
            self._fail(frame_id, Unauthorized())
            return
        if isinstance(result, Reply):
            self._reply(result.type, result.data, frame_id)
        elif frame_id is not None:
            self._reply("ack", result, frame_id)

    def _reply(self, event_type: str, data: Any, frame_id: Any) -> None:
        try:
            self.hub.send(self, event_type, data, frame_id)
        except (TypeError, ValueError):  # a handler returned something JSON cannot carry
            log.exception("the reply to a WebSocket %s frame is not JSON-serialisable", event_type)
            self._fail(frame_id, InternalError())

    def _fail(self, frame_id: Any, error: ApiError) -> None:
        """Send the ``error`` frame; an unauthenticated socket is then closed (4401)."""
        data: dict[str, Any] = {"code": error.code, "message": error.message}
        if error.details is not None:
            data["details"] = error.details
        if error.retry_after is not None:  # RATE_LIMITED, UNAVAILABLE
            data["retryAfter"] = error.retry_after
        try:
            self.hub.send(self, "error", data, frame_id)
        except (TypeError, ValueError):
            log.exception("an error frame is not JSON-serialisable")
            self.hub.send(self, "error", {"code": error.code, "message": error.message}, frame_id)
        if self.actor is None:
            self._close(CLOSE_UNAUTHORIZED, error.message if error.status == 401 else "Authentication required")
        return None

    def _refuse(self, bucket: TokenBucket, now: float, *, frame_id: Any = None,
                message: str | bytes | None = None) -> None:
        """A frame over a rate: answer RATE_LIMITED, or close a socket that keeps flooding.
        ``message`` is the raw frame when it was refused before being parsed."""
        flood = self._flood
        if flood is None:
            flood = self._flood = TokenBucket(self.application.config.ws_rate_limit, FLOOD_CLOSE_FACTOR)
        if not flood.take(now):
            self._close(CLOSE_TOO_MANY, "Too many messages")
            return None
        if message is not None:
            frame_id = _peek_id(message)
        return self._fail(frame_id, RateLimited("Too many messages; slow down",
                                                retry_after=bucket.retry_after()))


def _valid_id(value: Any) -> bool:
    kind = type(value)
    return (kind is str and 0 < len(value) <= MAX_ID_LENGTH) or (kind is int and -(2**53) < value < 2**53)


def _peek_id(message: str | bytes) -> Any:
    """The id of a frame refused before it was parsed (a rate-limited one), if it has one."""
    try:
        frame = json.loads(message)
    except (ValueError, RecursionError, TypeError):
        return None
    frame_id = frame.get("id") if type(frame) is dict else None
    return frame_id if frame_id is not None and _valid_id(frame_id) else None


# ---------------------------------------------------------------------------
# Core events, registered by the application like any plugin's
# ---------------------------------------------------------------------------


@ws_event(AUTH_EVENT, auth=False, summary="Authenticate this socket with an access token")
async def auth_event(ctx: EventContext, data: Any) -> dict[str, Any]:
    """``{"token": "<access JWT>"}`` → ack ``{userId, sessionId}`` after ``ready``; a bad or
    expired token gets an error and close 4401."""
    socket = ctx.socket
    if socket.actor is not None:
        raise ValidationFailed("This socket is already authenticated")
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise Unauthorized("The auth frame needs data.token")
    # Upgrade: the credentials of a socket, presented once (an access token is then verified
    # without being remembered, as on the upgrade itself).
    headers = HTTPHeaders({"Authorization": f"Bearer {token.strip()}", "Upgrade": "websocket"})
    actor = await socket.application.resolve_actor(headers, socket.client_ip)
    if actor is None:
        raise Unauthorized("Invalid token")
    if not socket.is_closing:  # the auth timeout may have fired while we resolved
        if not await socket.authenticated(actor):
            raise RateLimited(TOO_MANY_FOR_USER, retry_after=SOCKET_CAP_RETRY_AFTER)
    return {"userId": actor.id, "sessionId": actor.session_id}


@ws_event("ping", summary="Liveness check at the application level; answered with pong")
async def ping_event(ctx: EventContext, data: Any) -> Reply:
    """Answers ``pong`` ``{time}`` (server epoch milliseconds) with the request's id, if any."""
    return Reply("pong", {"time": int(time.time() * 1000)})


CORE_EVENTS = [auth_event, ping_event]

CORE_SERVER_EVENTS = [
    server_event("ready", "The socket is authenticated (after the upgrade's token, or the auth frame)",
                 schema="core/ws/ready"),
    server_event("ack", "The answer to a client frame with an id: the event's result, with the same id",
                 schema="core/ws/ack"),
    server_event("error", "A client frame was refused (with its id, when it had one)", schema="core/ws/error"),
    server_event("pong", "The answer to ping", schema="core/ws/pong"),
]
