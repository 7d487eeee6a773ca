"""Answering a request before its body has been read, without resetting the connection.

A refusal often comes before the body: a declared length over the cap (413), a rate limit
(429), a missing sign-in on an upload (401), a content type or form field the upload refuses
(415, 400). Tornado then closes the connection as soon as the answer is written, with the body
still unread and no ``Connection: close``: the kernel turns a close with unread bytes into a
reset, which can destroy the answer in flight and breaks the client's next request on that
keep-alive connection.

So an early answer goes out at once, and then takes one of two ways, chosen by ``plan``:

- **drain**: the rest of the body is declared (``Content-Length``) and small: the connection
  stays open; Tornado reads the rest and drops it (a finished request is handed no more body),
  then serves the next request. Bounded by ``DRAIN_MAX_BYTES``, and by ``DRAIN_SECONDS``, past
  which the connection is closed as below;
- **close**: anything else (a large or chunked rest, a client waiting for ``100 Continue``):
  the answer says ``Connection: close``, and the connection is closed the way web servers close
  one that is still receiving: our side stops sending, reads and drops what the client still
  sends for at most ``LINGER_SECONDS`` / ``LINGER_MAX_BYTES``, and only then closes, so the
  client has read the answer before the connection goes.

This module never decides what the answer is; ``ApiHandler.finish`` asks it how to send one.
One answer is made here all the same, because how it must be sent is part of it: a
``Content-Length`` that cannot be read is a 400 whose body is never read (``checked_length``),
from a REST route or a WebSocket upgrade alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any, Iterator

import tornado.ioloop

from .errors import ValidationFailed
from .request_info import declared_length

__all__ = ["DRAIN", "CLOSE", "plan", "body_pending", "checked_length", "connection_kept",
           "drain_within_deadline", "keep_socket_open", "linger_and_close"]

DRAIN, CLOSE = "drain", "close"
# A rest of body up to this size (bytes) is read and dropped so the connection survives: on a
# link a client uploads over, a few MiB take well under DRAIN_SECONDS, and reading them costs
# less than a new connection (and TLS handshake) for the next request. Above it, closing is cheaper.
DRAIN_MAX_BYTES = 4 * 1024 * 1024
# The longest a connection waits for a body it drops (s), before it is closed as a slow one.
DRAIN_SECONDS = 5.0
# After a closing answer, what the client still sends is read and dropped for this long (s) and
# up to this many bytes (nginx's lingering close waits 5 s between reads by default): long
# enough for a client to finish writing and read the answer, short enough to bound the cost.
LINGER_SECONDS = 5.0
LINGER_MAX_BYTES = 64 * 1024 * 1024
_LINGER_READ_BYTES = 64 * 1024

# Lingering closes under way, kept referenced so they are not collected mid-read.
_lingering: set[asyncio.Task] = set()


def body_pending(request: Any) -> bool:
    """Whether the request's body is still arriving (Tornado resolves ``_body_future`` once the
    whole body, possibly empty, has been read, for every handler that streams its body)."""
    future = getattr(request, "_body_future", None)
    return future is not None and not future.done()


def checked_length(request: Any) -> int | None:
    """The body length ``request`` declares (``None``: no ``Content-Length``), or
    ``ValidationFailed`` when its ``Content-Length`` cannot be read.

    Such a body is never read: its header is dropped first, so Tornado does not fail on it
    after our answer (with a bare 400 and a log line of its own), and the connection closes
    after the answer (``Connection: close``): whatever the client sends after its headers is
    not a request to serve."""
    try:
        return declared_length(request.headers)
    except ValueError as error:
        del request.headers["Content-Length"]
        request.connection._disconnect_on_finish = True  # Tornado's own flag for this
        raise ValidationFailed("Malformed Content-Length header",
                               details=[{"field": "Content-Length", "message": str(error)}]) from None


def plan(request: Any, received: int) -> str:
    """How to answer ``request`` now that ``received`` bytes of its body have arrived."""
    headers = request.headers
    if headers.get("Expect", "").lower() == "100-continue":
        return CLOSE  # the client sends nothing more unless told to continue: no need to wait
    if headers.get("Connection", "").lower() == "close" or request.version == "HTTP/1.0":
        return CLOSE  # the connection ends after this answer anyway: end it cleanly
    rest = _rest_of_body(request, received)
    return DRAIN if rest is not None and rest <= DRAIN_MAX_BYTES else CLOSE


def _rest_of_body(request: Any, received: int) -> int | None:
    """Bytes of body still to come, ``None`` when unknown (chunked, or a malformed length)."""
    headers = request.headers
    if "Transfer-Encoding" in headers:
        return None
    declared = headers.get("Content-Length", "0").strip() or "0"
    return max(0, int(declared) - received) if declared.isdigit() else None


@contextlib.contextmanager
def connection_kept(request: Any) -> Iterator[None]:
    """Finish an answer inside this block to keep its connection open while the rest of the
    body is read and dropped. Tornado's ``HTTP1Connection.finish`` closes a connection whose
    answer ends before its body was read (it checks ``_read_finished``), the only way it knows
    to skip a body of unknown size; the rest is known and bounded here, so for that check the
    read counts as finished. Tornado's read loop then reads the rest, hands it to nobody,
    marks the read finished itself and goes on to the next request."""
    connection = request.connection
    connection._read_finished = True
    try:
        yield
    finally:
        connection._read_finished = False


def drain_within_deadline(request: Any, received: int) -> None:
    """Close the connection (lingering) if the rest of the body is not in by ``DRAIN_SECONDS``."""
    if not _rest_of_body(request, received):
        return  # no body (a GET refused in ``prepare``): nothing to wait for

    def check() -> None:
        if not body_pending(request):
            return
        stream = request.connection.stream
        sock = keep_socket_open(request)
        stream.close()
        if sock is not None:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            linger_and_close(sock, done)

    tornado.ioloop.IOLoop.current().call_later(DRAIN_SECONDS, check)


def keep_socket_open(request: Any) -> socket.socket | None:
    """A second handle on the request's socket, so that Tornado closing its own does not close
    the connection; ``linger_and_close`` ends it. ``None`` when the connection is already gone."""
    stream = getattr(request.connection, "stream", None)
    sock = getattr(stream, "socket", None)
    if sock is None or stream.closed():
        return None
    try:
        duplicate = socket.socket(fileno=os.dup(sock.fileno()))
    except OSError:
        return None
    duplicate.setblocking(False)
    return duplicate


def linger_and_close(sock: socket.socket, answer_sent: "asyncio.Future[Any]") -> None:
    """Once the answer is sent, stop sending, drop what still arrives (bounded), then close."""
    task = asyncio.ensure_future(_linger(sock, answer_sent))
    _lingering.add(task)
    task.add_done_callback(_lingering.discard)


async def _linger(sock: socket.socket, answer_sent: "asyncio.Future[Any]") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER_SECONDS
    received = 0
    try:
        try:
            await asyncio.wait_for(asyncio.shield(answer_sent), LINGER_SECONDS)
        except Exception:  # noqa: BLE001 - the connection died: close our handle all the same
            return
        sock.shutdown(socket.SHUT_WR)  # the client sees the answer end, then EOF
        while received < LINGER_MAX_BYTES:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            data = await asyncio.wait_for(loop.sock_recv(sock, _LINGER_READ_BYTES), remaining)
            if not data:
                break  # the client closed its side: nothing more will come
            received += len(data)
    except (OSError, asyncio.TimeoutError):
        pass
    finally:
        sock.close()
