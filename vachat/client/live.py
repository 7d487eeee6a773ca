"""``LiveConnection``: one WebSocket to the server that survives drops (docs/websocket.md).

What it promises its caller:

- **It stays connected.** After any drop (the network, a server restart, a proxy) it
  reconnects with jittered exponential back-off, authenticating with the client's current
  credentials (refreshed first when due, and once more when the server refuses them with 4401).
- **Nothing missed, nothing twice, in order.** It re-joins every conversation it had joined
  with ``sinceSeq`` = the latest change seq it knows (the join answer's ``seq``, then the
  ``data.seq`` of each message frame; ``since`` = the last message it delivered, with a server
  that sends no seq), delivers the join answer's ``missed``
  (paging the rest over REST when ``hasMore``) and ``deleted``, then the live frames that came
  meanwhile, dropping any message it already delivered (by id) or an edit it already has (by
  ``updatedAt``). An assistant reply being generated resumes from the answer's ``generation``:
  the text generated during the cut arrives as one ``AiDelta``, then the live deltas after it.
- **A send is stored once.** ``send()`` gives each message a ``clientMessageId`` and sends it
  again after every reconnect until the server acknowledges it (and after ``retryAfter`` when
  the server refuses it for now: a rate limit, ``UNAVAILABLE`` while its database is away); the
  server stores one message per ``clientMessageId``, so the retries cannot duplicate it. Sends
  keep their order.
- **Typed events in order**: ``async for event in live`` (``vachat.client.events``), including
  ``Disconnected`` / ``Reconnected`` so a user interface can say so.

It gives up only when continuing cannot help: the session ended (a refresh refused), an API key
refused, or a server speaking a newer protocol (``ProtocolMismatch``). Iterators, pending
sends and requests then raise that error.

This module imports nothing from the server; it uses Tornado's WebSocket client.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import random
from dataclasses import dataclass
from typing import Any, AsyncIterator, Protocol

import tornado.httpclient
import tornado.websocket

from .errors import (
    ApiError, ClientError, ConnectionFailed, PayloadTooLarge, ProtocolMismatch, RateLimited, Unauthorized,
    Unavailable, error_from_envelope,
)
from .events import (
    AiDelta, AiDone, AiTyping, Disconnected, Event, MessageDeleted, MessageUpdated, NewMessage, Ready,
    Reconnected, event_conversation, parse_event,
)
from .models import Message, MessagePage, new_client_message_id
from .replies import Closed, ReplyStream
from .rooms import Room

__all__ = ["LiveConnection", "RestSide", "ReplyStream", "PROTOCOL_VERSION", "Backoff"]

log = logging.getLogger("vachat.client")

# The newest /ws protocol this client understands (the server's ``ready.protocol``).
PROTOCOL_VERSION = 1
# Close codes (README "WebSocket"): 4401 unauthenticated, 4403 origin refused, 1009 frame too big.
CLOSE_UNAUTHORIZED = 4401
CLOSE_ORIGIN_REFUSED = 4403
CLOSE_MESSAGE_TOO_BIG = 1009
# Seconds to wait for ``ready`` after the upgrade (the server sends it at once).
READY_TIMEOUT = 15.0
# Seconds to wait for the answer to a request frame before treating the socket as dead.
REQUEST_TIMEOUT = 30.0
# REST page size when a re-join missed more than the answer carries (the server's maximum).
CATCH_UP_PAGE = 200


@dataclass
class Backoff:
    """Jittered exponential back-off: attempt n waits a random time between half and all of
    ``min(maximum, initial * 2**n)``, so clients dropped together do not return together."""

    initial: float = 0.25
    maximum: float = 15.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** min(attempt, 30)))
        return ceiling / 2 + random.random() * ceiling / 2


class _Dropped(ConnectionError):
    """The socket a request was sent on closed before its answer came."""


@dataclass
class _PendingSend:
    payload: dict[str, Any]
    future: asyncio.Future[Message]
    in_flight: bool = False


class RestSide(Protocol):
    """What a live connection leans on from the REST client that opens it (``rest.Client``,
    through ``client.live()``): its credentials, renewed when the server says they expired, and
    the message history it catches up from. Declared here, so that this module does not import
    the REST one, which builds on it."""

    api_key: str | None
    user_agent: str

    @property
    def tokens(self) -> object | None: ...

    @property
    def ws_url(self) -> str: ...

    async def auth_headers(self) -> dict[str, str]: ...

    async def refresh(self, stale: str | None = None) -> object: ...

    async def messages(self, conversation_id: str, *, before: str | None = None, after: str | None = None,
                       limit: int | None = None) -> MessagePage: ...


class LiveConnection:
    """A WebSocket to the server that reconnects and resumes by itself (module docstring).

    ``await live.connect()`` opens it (raising when the credentials or the protocol are
    refused); ``await live.join(conversation_id)``; ``async for event in live``;
    ``await live.send(conversation_id, text)``; ``stream = await live.ask(conversation_id,
    text)`` for an assistant reply; ``await live.close()``.
    """

    def __init__(self, client: RestSide, *, backoff: Backoff | None = None, ping_interval: float = 20.0,
                 buffer_events: bool = True) -> None:
        self.client = client
        self.backoff = backoff or Backoff()
        self.ping_interval = ping_interval
        self.ready: Ready | None = None
        self.reconnects = 0
        self._buffer_events = buffer_events
        self._events: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._listeners: set[asyncio.Queue[Event | BaseException]] = set()
        self._rooms: dict[str, Room] = {}
        self._outbox: dict[str, _PendingSend] = {}
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._frame_ids = itertools.count(1)
        self._socket: tornado.websocket.WebSocketClientConnection | None = None
        self._reader: asyncio.Future[None] | None = None
        # Set once a socket is authenticated, its rooms re-joined and what they missed delivered.
        self._connected = asyncio.Event()
        # Live frames wait here while a join's answer is being delivered (they come after it).
        self._holding = 0
        self._held: list[Event] = []
        self._fatal: BaseException | None = None
        self._down = False  # a Disconnected was delivered and no Reconnected yet
        self._closed = False
        self._runner: asyncio.Task[None] | None = None
        self._first: asyncio.Future[Ready] | None = None

    # -- life cycle --------------------------------------------------------------------

    async def connect(self) -> Ready:
        """Open the connection; returns the server's ``ready``. Raises ``Unauthorized`` for
        refused credentials, ``ProtocolMismatch``, or ``ConnectionFailed`` when the first
        attempt cannot reach the server (later drops are retried without raising)."""
        if self._runner is not None:
            raise ClientError("already connected")
        self._first = asyncio.get_running_loop().create_future()
        self._runner = asyncio.ensure_future(self._run())
        return await self._first

    async def close(self) -> None:
        """Close for good: pending sends and waiting iterators get ``ConnectionFailed``."""
        self._closed = True
        if self._socket is not None:
            self._socket.close()
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except (asyncio.CancelledError, Exception):
                pass
        self._finish(ConnectionFailed("The connection was closed"))

    async def __aenter__(self) -> "LiveConnection":
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- what the caller does -----------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate(self._events)

    async def _iterate(self, queue: asyncio.Queue[Event | BaseException]) -> AsyncIterator[Event]:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                queue.put_nowait(item)  # every later reader learns it too
                if isinstance(item, Closed):
                    return
                raise item
            yield item

    async def join(self, conversation_id: str, since: str | None = None) -> list[Message]:
        """Join a conversation's room and stay joined across reconnects. Returns the
        messages after ``since`` (oldest first), which are also delivered as ``NewMessage``
        events; without ``since`` it starts from the conversation's newest message, so this is
        ``[]`` unless one arrived meanwhile. From here on nothing of the conversation is missed."""
        room = self._rooms.get(conversation_id)
        if room is None:
            if since is None:
                # Joined from the newest message on: a drop before anything new arrived then
                # re-joins from there, not from the beginning of the conversation.
                newest = await self.client.messages(conversation_id, limit=1)
                since = newest.items[0].id if newest.items else None
            room = self._rooms[conversation_id] = Room(conversation_id, last_seen=since)
        room.joined = asyncio.get_running_loop().create_future()
        if self.connected:
            await self._join(room, reconnect=False)
        answer = await room.joined
        return [Message.from_wire(item) for item in answer.get("missed") or []]

    async def leave(self, conversation_id: str) -> None:
        room = self._rooms.pop(conversation_id, None)
        if room is not None and self.connected:
            try:
                await self.request("leave-conversation", {"conversationId": conversation_id})
            except ClientError:
                pass  # dropped (the server forgot the room with the socket) or already gone

    async def send(self, conversation_id: str, content: str, *, requires_ai_response: bool = False,
                   client_message_id: str | None = None, **fields: Any) -> Message:
        """Send a message; returns it as stored, once the server acknowledged it. Sent again
        after each reconnect until then (same ``clientMessageId``: stored once). ``fields``
        on the wire's names: ``type``, ``files``, ``parentId``, ``metadata``."""
        self._raise_if_finished()
        cmid = client_message_id or new_client_message_id()
        payload = {"conversationId": conversation_id, "content": content, "requiresAIResponse": requires_ai_response,
                   "clientMessageId": cmid, **fields}
        pending = self._outbox.get(cmid)
        if pending is None:
            pending = self._outbox[cmid] = _PendingSend(payload, asyncio.get_running_loop().create_future())
            if self.connected:
                self._transmit(pending)
        return await asyncio.shield(pending.future)

    @property
    def unacknowledged(self) -> list[dict[str, Any]]:
        """Sends not acknowledged yet (what a user interface shows as "sending")."""
        return [pending.payload for pending in self._outbox.values()]

    def add_listener(self, queue: asyncio.Queue[Event | BaseException]) -> None:
        """Have ``queue`` receive every event from now on, and the error that ends the
        connection (how a ``ReplyStream`` follows its reply)."""
        self._listeners.add(queue)

    def remove_listener(self, queue: asyncio.Queue[Event | BaseException]) -> None:
        self._listeners.discard(queue)

    def seen_ids(self, conversation_id: str) -> "collections.OrderedDict[str, str]":
        """The ids of the messages of a joined conversation delivered so far (→ ``updatedAt``)."""
        room = self._rooms.get(conversation_id)
        return room.seen if room is not None else collections.OrderedDict()

    async def ask(self, conversation_id: str, content: str, **fields: Any) -> "ReplyStream":
        """Send ``content`` asking for the assistant's reply; returns a ``ReplyStream``:
        ``async for delta in stream`` gives the reply's text as it is generated, then
        ``stream.message`` (or ``await stream.final()``) is the stored reply."""
        if conversation_id not in self._rooms:
            await self.join(conversation_id)  # the reply's frames go to the conversation's room
        stream = ReplyStream(self, conversation_id)  # listening before the send: no delta is missed
        try:
            stream.question = await self.send(conversation_id, content, requires_ai_response=True, **fields)
        except BaseException:
            stream.close()
            raise
        return stream

    async def regenerate(self, message_id: str) -> "ReplyStream":
        """Ask for a new assistant reply in place of the reply ``message_id`` (``POST
        /api/chat/messages/:id/regenerate``: the old one is kept as a sibling branch); returns
        its ``ReplyStream``, like ``ask``. Its conversation is joined if it is not yet."""
        # Listening before the request, so no delta is missed; the answer names the conversation.
        stream = ReplyStream(self, "")
        try:
            started = await self.client.regenerate(message_id)
            stream.conversation_id, stream.message_id = started["conversationId"], started["messageId"]
            if stream.conversation_id not in self._rooms:
                # From the replaced reply on: the new one is delivered even if it is already stored.
                await self.join(stream.conversation_id, since=message_id)
        except BaseException:
            stream.close()
            raise
        return stream

    async def stop(self, conversation_id: str) -> bool:
        """``stop-generation``: True when a reply was running (it is stored as it stands)."""
        answer = await self.request("stop-generation", {"conversationId": conversation_id}, retry=True)
        return bool((answer or {}).get("stopped"))

    async def typing(self, conversation_id: str, typing: bool = True) -> None:
        """``typing-start`` / ``typing-stop`` (best effort: dropped while disconnected)."""
        if self.connected:
            try:
                await self.request("typing-start" if typing else "typing-stop", {"conversationId": conversation_id})
            except ClientError:
                pass

    async def request(self, event_type: str, data: Any = None, *, retry: bool = False,
                      timeout: float = REQUEST_TIMEOUT) -> Any:
        """Send a frame with an id and return its ``ack`` data; an ``error`` answer raises its
        typed ``ApiError``. Waits for the connection; with ``retry`` a drop before the answer
        sends it again on the next connection (for requests safe to repeat)."""
        while True:
            self._raise_if_finished()
            await self._connected.wait()
            try:
                return await self._request(event_type, data, timeout)
            except _Dropped:
                if not retry:
                    raise ConnectionFailed(f"The connection dropped before {event_type} was answered") from None

    # -- the connection loop -------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        refreshed = False
        while not self._closed:
            reason = "connection lost"
            try:
                socket = await self._open()
                ready = await self._await_ready(socket)
                refreshed = False
                attempt = 0
                await self._resume(socket, ready)
                code, reason = await self._read_until_closed(socket)
                if code == CLOSE_UNAUTHORIZED:
                    if refreshed or self.client.api_key or self.client.tokens is None:
                        raise Unauthorized(f"The server ended this connection: {reason}")
                    await self.client.refresh()  # the session may have ended: a refused refresh is final
                    refreshed = True
                    attempt = -1  # at once: the credentials, not the network, were the trouble
            except _AuthRefused as refused:
                if refreshed or self.client.api_key or self.client.tokens is None:
                    self._give_up(Unauthorized(f"The server refused the credentials: {refused}"))
                    return
                try:
                    await self.client.refresh()
                except ApiError as error:  # the session ended: signing in again is the caller's call
                    self._give_up(error)
                    return
                except ConnectionFailed as error:
                    reason = str(error)  # the server went away meanwhile: try again later
                else:
                    refreshed = True
                    attempt = -1
                    reason = "credentials refreshed"
            except (ProtocolMismatch, Unauthorized) as error:
                self._give_up(error)
                return
            except asyncio.CancelledError:
                raise
            except RateLimited as error:
                reason = str(error)
                await self._after_drop(reason)
                await asyncio.sleep(max(error.retry_after or 0, self.backoff.delay(attempt)))
                attempt += 1
                continue
            except (OSError, ConnectionFailed, tornado.websocket.WebSocketClosedError, asyncio.TimeoutError,
                    tornado.httpclient.HTTPClientError, _Dropped, ApiError) as error:
                reason = f"{type(error).__name__}: {error}"
                if self._first is not None and not self._first.done():
                    self._give_up(error if isinstance(error, ClientError) else
                                  ConnectionFailed(f"Cannot connect to {self.client.ws_url}: {error}"))
                    return
            await self._after_drop(reason)
            if self._closed:
                return
            if attempt >= 0:
                await asyncio.sleep(self.backoff.delay(attempt))
            attempt += 1

    async def _open(self) -> tornado.websocket.WebSocketClientConnection:
        headers = {"User-Agent": self.client.user_agent, **(await self.client.auth_headers())}
        request = tornado.httpclient.HTTPRequest(self.client.ws_url, headers=headers, connect_timeout=10,
                                                 request_timeout=20)
        try:
            return await tornado.websocket.websocket_connect(request, ping_interval=self.ping_interval,
                                                             ping_timeout=self.ping_interval)
        except tornado.httpclient.HTTPClientError as error:
            body = error.response.body if error.response is not None else b""
            try:
                envelope = json.loads(body) if body else {}
            except ValueError:
                envelope = {}
            retry_after = error.response.headers.get("Retry-After") if error.response is not None else None
            if isinstance(envelope, dict) and envelope.get("code"):
                raise error_from_envelope(envelope, error.code, float(retry_after) if retry_after else None) from None
            raise ConnectionFailed(f"{self.client.ws_url} answered HTTP {error.code}") from None

    async def _await_ready(self, socket: tornado.websocket.WebSocketClientConnection) -> Ready:
        message = await asyncio.wait_for(socket.read_message(), READY_TIMEOUT)
        while message is not None:
            frame = _parse(message)
            if frame.get("type") == "ready":
                ready = parse_event("ready", frame.get("data"))
                assert isinstance(ready, Ready)
                if ready.protocol > PROTOCOL_VERSION:
                    socket.close()
                    raise ProtocolMismatch(ready.protocol, PROTOCOL_VERSION)
                return ready
            message = await asyncio.wait_for(socket.read_message(), READY_TIMEOUT)
        if socket.close_code == CLOSE_UNAUTHORIZED:
            raise _AuthRefused(socket.close_reason or "unauthorized")
        if socket.close_code == CLOSE_ORIGIN_REFUSED:
            raise ConnectionFailed(f"The server refused this client's origin: {socket.close_reason}")
        raise ConnectionFailed(f"closed before ready ({socket.close_code} {socket.close_reason or ''})".strip())

    async def _resume(self, socket: tornado.websocket.WebSocketClientConnection, ready: Ready) -> None:
        """Re-join every room, delivering what each missed before the live frames that came
        meanwhile, then send again what is not acknowledged."""
        self._socket = socket
        self._held = []
        self._reader = asyncio.ensure_future(self._read(socket))
        first = self.ready is None
        self.ready = ready
        while True:  # a room joined by the caller meanwhile is joined on this socket too
            todo = [room for room in self._rooms.values() if room.joined_on is not socket]
            if not todo or self._reader.done():
                break
            for room in todo:
                await self._join(room, reconnect=not first)
        if self._reader.done():
            return  # dropped while re-joining: the loop reconnects
        self._connected.set()
        if first:
            if self._first is not None and not self._first.done():
                self._first.set_result(ready)
        elif self._down:
            self.reconnects += 1
            self._deliver(Reconnected())
        self._down = False
        for pending in list(self._outbox.values()):
            self._transmit(pending)

    async def _read_until_closed(self, socket: tornado.websocket.WebSocketClientConnection) -> tuple[int | None, str]:
        await self._reader
        return socket.close_code, socket.close_reason or "connection lost"

    async def _read(self, socket: tornado.websocket.WebSocketClientConnection) -> None:
        try:
            await self._read_frames(socket)
        finally:
            # Requests awaiting an answer on this socket will not get one: fail them now (the
            # re-joins of a reconnect are among them) rather than after their timeout.
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(_Dropped())
                    future.exception()
            self._replies.clear()

    async def _read_frames(self, socket: tornado.websocket.WebSocketClientConnection) -> None:
        while True:
            message = await socket.read_message()
            if message is None:
                return
            frame = _parse(message)
            kind, frame_id = frame.get("type"), frame.get("id")
            if frame_id is not None and frame_id in self._replies:
                future = self._replies.pop(frame_id)
                if not future.done():
                    future.set_result(frame)
                continue
            if not isinstance(kind, str):
                continue
            event = parse_event(kind, frame.get("data"))
            if self._holding:
                self._held.append(event)
            else:
                self._deliver(event)

    async def _after_drop(self, reason: str) -> None:
        socket, self._socket = self._socket, None
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._holding = 0
        self._held = []
        if socket is not None:
            socket.close()
            if socket.close_code == CLOSE_MESSAGE_TOO_BIG:
                # The frame in flight will never fit: fail it rather than resend it forever.
                for cmid, pending in list(self._outbox.items()):
                    if pending.in_flight:
                        self._outbox.pop(cmid)
                        pending.future.set_exception(PayloadTooLarge("The message is too large for the server"))
        for future in self._replies.values():
            if not future.done():
                future.set_exception(_Dropped())
                future.exception()
        self._replies.clear()
        for pending in self._outbox.values():
            pending.in_flight = False
        if was_connected:
            log.info("connection to %s lost (%s); reconnecting", self.client.ws_url, reason)
            self._down = True
            self._deliver(Disconnected(reason))

    def _give_up(self, error: BaseException) -> None:
        self._fatal = error
        if self._first is not None and not self._first.done():
            self._first.set_exception(error)
        self._finish(error)

    def _finish(self, error: BaseException) -> None:
        self._connected.clear()
        for pending in self._outbox.values():
            if not pending.future.done():
                pending.future.set_exception(error)
                pending.future.exception()
        self._outbox.clear()
        for room in self._rooms.values():
            if room.joined is not None and not room.joined.done():
                room.joined.set_exception(error)
                room.joined.exception()
        ending = Closed() if isinstance(error, ConnectionFailed) and self._closed else error
        self._events.put_nowait(ending)
        for listener in self._listeners:
            listener.put_nowait(ending)

    def _raise_if_finished(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise ConnectionFailed("The connection was closed")

    # -- frames --------------------------------------------------------------------------------

    async def _request(self, event_type: str, data: Any, timeout: float) -> Any:
        socket = self._socket
        if socket is None:
            raise _Dropped()
        frame_id = f"c{next(self._frame_ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[frame_id] = future
        try:
            await socket.write_message(json.dumps({"type": event_type, "id": frame_id, "data": data}))
        except tornado.websocket.WebSocketClosedError:
            self._replies.pop(frame_id, None)
            raise _Dropped() from None
        try:
            reply = await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            self._replies.pop(frame_id, None)
            socket.close()  # an unanswered request means a dead socket: reconnect
            raise _Dropped() from None
        if reply.get("type") == "error":
            raise error_from_envelope(reply.get("data"))
        return reply.get("data")

    def _transmit(self, pending: _PendingSend) -> None:
        if pending.in_flight or pending.future.done():
            return
        pending.in_flight = True
        asyncio.ensure_future(self._transmit_once(pending))

    async def _transmit_once(self, pending: _PendingSend) -> None:
        cmid = pending.payload["clientMessageId"]
        try:
            data = await self._request("send-message", pending.payload, REQUEST_TIMEOUT)
        except _Dropped:
            pending.in_flight = False  # sent again when the connection is back
            return
        except (RateLimited, Unavailable) as error:  # refused for now (a limit, a database outage)
            pending.in_flight = False
            await asyncio.sleep(error.retry_after or 1.0)
            if self.connected:
                self._transmit(pending)
            return
        except ApiError as error:
            self._outbox.pop(cmid, None)
            if not pending.future.done():
                pending.future.set_exception(error)
            return
        self._outbox.pop(cmid, None)
        if not pending.future.done():
            pending.future.set_result(Message.from_wire(data))

    async def _join(self, room: Room, *, reconnect: bool) -> None:
        """Join ``room`` (again) and deliver what its answer says was missed, before any live
        frame that followed the answer (they are held meanwhile)."""
        socket = self._socket
        data: dict[str, Any] = {"conversationId": room.conversation_id}
        if room.last_seq is not None:
            data["sinceSeq"] = room.last_seq
        elif room.last_seen is not None:
            data["since"] = room.last_seen
        self._holding += 1
        try:
            try:
                while True:
                    try:
                        answer = await self._request("join-conversation", data, REQUEST_TIMEOUT)
                        break
                    except Unavailable as error:  # the server cannot answer yet: ask again
                        await asyncio.sleep(error.retry_after or 1.0)
                        if socket is not self._socket:
                            return
            except _Dropped:
                return  # joined again on the next connection
            except ApiError as error:
                self._rooms.pop(room.conversation_id, None)
                if room.joined is not None and not room.joined.done():
                    room.joined.set_exception(error)
                    room.joined.exception()
                return
            missed = [Message.from_wire(item) for item in answer.get("missed") or []]
            room.saw_seq(answer.get("seq"))
            for message_id in answer.get("deleted") or []:
                self._deliver(MessageDeleted(room.conversation_id, message_id))
            for message in missed:
                self._deliver_message(room, message)
            if answer.get("hasMore") and missed:
                await self._page_after(room, missed[-1].id)
            elif reconnect and room.last_seen is None and "sinceSeq" not in data:
                await self._page_all(room)
            self._resume_generation(room, answer.get("generation"))
            room.joined_on = socket
            if room.joined is not None and not room.joined.done():
                room.joined.set_result(answer)
        finally:
            if socket is self._socket and self._holding:
                self._holding -= 1
                if not self._holding:
                    held, self._held = self._held, []
                    for event in held:
                        self._deliver(event)

    async def _page_after(self, room: Room, after: str) -> None:
        """Deliver, oldest first, the messages newer than ``after`` (a re-join missed more
        than its answer could carry)."""
        cursor: str | None = after
        while cursor is not None:
            page = await self.client.messages(room.conversation_id, after=cursor, limit=CATCH_UP_PAGE)
            for message in reversed(page.items):
                self._deliver_message(room, message)
            cursor = page.items[0].id if page.items and page.next_cursor else None

    async def _page_all(self, room: Room) -> None:
        """A conversation joined empty, then a drop: everything in it is what was missed."""
        collected: list[Message] = []
        cursor: str | None = None
        while True:
            page = await self.client.messages(room.conversation_id, before=cursor, limit=CATCH_UP_PAGE)
            collected.extend(page.items)
            if not page.next_cursor or not page.items:
                break
            cursor = page.next_cursor
        for message in reversed(collected):
            self._deliver_message(room, message)

    def _resume_generation(self, room: Room, generation: Any) -> None:
        if not isinstance(generation, dict) or not generation.get("messageId"):
            return
        message_id, text, index = generation["messageId"], generation.get("text") or "", int(generation.get("index", -1))
        if room.generation_id != message_id:
            room.generation_id, room.generation_index, room.generation_text = message_id, -1, ""
            self._deliver(AiTyping(room.conversation_id, True))
        if index > room.generation_index and text.startswith(room.generation_text):
            self._deliver(AiDelta(room.conversation_id, message_id, index, text[len(room.generation_text):]))

    # -- delivery: order and no repeats ------------------------------------------------------------

    def _deliver_message(self, room: Room, message: Message) -> None:
        if message.id in room.seen:
            if room.seen[message.id] != message.updated_at:
                self._deliver(MessageUpdated(message))
        else:
            self._deliver(NewMessage(message))

    def _deliver(self, event: Event) -> None:
        conversation_id = event_conversation(event)
        room = self._rooms.get(conversation_id) if conversation_id else None
        if room is not None and not self._keep(room, event):
            return
        if self._buffer_events:
            self._events.put_nowait(event)
        for listener in self._listeners:
            listener.put_nowait(event)

    @staticmethod
    def _keep(room: Room, event: Event) -> bool:
        """Whether ``event`` is news for ``room``, updating what the room knows."""
        if isinstance(event, (NewMessage, MessageUpdated)):
            room.saw_seq(event.message.seq)
        elif isinstance(event, MessageDeleted):
            room.saw_seq(event.seq)
        if isinstance(event, NewMessage):
            message = event.message
            if message.id in room.seen:
                return False
            room.remember(message)
            room.last_seen = message.id
            if message.id == room.generation_id:
                room.generation_id, room.generation_index, room.generation_text = None, -1, ""
            return True
        if isinstance(event, MessageUpdated):
            message = event.message
            if room.seen.get(message.id) == message.updated_at:
                return False
            if message.id in room.seen:
                room.remember(message)
            return True
        if isinstance(event, MessageDeleted):
            if event.message_id in room.deleted:
                return False
            room.deleted.add(event.message_id)
            return True
        if isinstance(event, AiDelta):
            if event.message_id == room.generation_id and event.index <= room.generation_index:
                return False
            if event.message_id != room.generation_id:
                if event.message_id in room.seen:
                    return False  # a late delta of a reply already stored
                room.generation_id, room.generation_text = event.message_id, ""
            room.generation_index = event.index
            room.generation_text += event.delta
            return True
        if isinstance(event, AiDone):
            return event.message_id not in room.seen
        return True


class _AuthRefused(Exception):
    """The server closed the socket 4401 before ``ready``: credentials to refresh."""


def _parse(message: str | bytes) -> dict[str, Any]:
    try:
        frame = json.loads(message)
    except ValueError:
        return {}
    return frame if isinstance(frame, dict) else {}
