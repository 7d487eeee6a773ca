"""Keep-alive pings for every socket of this node on one timer (``WS_PING_INTERVAL``,
``WS_PING_TIMEOUT``).

Tornado's own pinging (``websocket_ping_interval``) runs an asyncio task per socket that
sleeps between pings: a task, its coroutine frame, a sleep future and a timer handle, about a
kilobyte for every idle socket. Here one timer ticks for all of them: the sockets are spread
over the ``slots`` ticks of one interval (a timing wheel), each tick pings the sockets of one
slot and checks those pinged ``timeout`` ago. A socket that has not answered its ping with a
pong by then is closed (1000 "ping timed out", as Tornado does; Tornado then drops it 5 s later
if it does not answer the close frame either).

A socket is first pinged one interval after it was added, then once every interval. Timeouts
are rounded up to whole ticks (a tick is at most ``MAX_TICK_SECONDS``), so a dead peer is
closed at most one tick later than ``timeout`` says; a timeout of 0 pings without ever closing.

This module must never block the IOLoop with a whole node's sockets at once (each tick touches
one slot), never close a socket that answered its last ping, and never keep a removed socket.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

import tornado.iostream
import tornado.websocket
from tornado.ioloop import PeriodicCallback

__all__ = ["Pinger", "MAX_TICK_SECONDS", "PING_TIMED_OUT"]

log = logging.getLogger("vachat.pings")

# The wheel's tick at most (s): short enough that a timeout is kept to within a second, long
# enough that an idle node wakes up once a second at most for its pings.
MAX_TICK_SECONDS = 1.0
PING_TIMED_OUT = (1000, "ping timed out")


class Pinger:
    """Pings the sockets ``add``-ed to it (each with ``proto``, the ``WebSocketProtocol``, and
    ``closing``; the pinger keeps ``ping_slot`` and ``awaiting_pong`` on them) and calls
    ``close(socket)`` for one that did not answer in time. ``pong(socket)`` records an answer."""

    def __init__(self, interval: float, timeout: float, close: Callable[[Any], None]) -> None:
        if interval <= 0:
            raise ValueError("a Pinger needs a positive interval")
        self.slot_count = max(1, math.ceil(interval / MAX_TICK_SECONDS))
        self.tick = interval / self.slot_count
        # Ticks between a slot's ping and its check: at most a whole turn (timeout <= interval).
        self.timeout_ticks = min(self.slot_count, math.ceil(timeout / self.tick)) if timeout > 0 else 0
        self._close = close
        # slot -> its sockets; a slot with none has no entry (an hour's interval is 3,600 slots)
        self._slots: dict[int, set[Any]] = {}
        self._cursor = 0  # the slot pinged last
        self._count = 0
        self._timer: PeriodicCallback | None = None

    def __len__(self) -> int:
        return self._count

    def add(self, socket: Any) -> None:
        """Ping ``socket`` from one interval from now on."""
        socket.ping_slot = self._cursor  # its turn comes again after a whole interval
        socket.awaiting_pong = False
        slot = self._slots.get(self._cursor)
        if slot is None:
            slot = self._slots[self._cursor] = set()
        slot.add(socket)
        self._count += 1
        if self._timer is None:
            self._timer = PeriodicCallback(self._tick, self.tick * 1000)
            self._timer.start()

    def remove(self, socket: Any) -> None:
        slot = self._slots.get(socket.ping_slot)
        if slot is not None and socket in slot:
            slot.discard(socket)
            if not slot:
                del self._slots[socket.ping_slot]
            self._count -= 1
            if not self._count:
                self.stop()

    @staticmethod
    def pong(socket: Any) -> None:
        socket.awaiting_pong = False

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _tick(self) -> None:
        self._cursor = cursor = (self._cursor + 1) % self.slot_count
        if self.timeout_ticks:
            silent = [s for s in self._slots.get((cursor - self.timeout_ticks) % self.slot_count, ())
                      if s.awaiting_pong and not s.closing]
            for socket in silent:
                try:
                    self._close(socket)
                except Exception:
                    log.exception("closing a socket that did not answer its ping failed")
        for socket in tuple(self._slots.get(cursor, ())):
            if socket.closing:
                continue
            socket.awaiting_pong = True
            try:
                socket.proto.write_ping(b"")
            except (tornado.iostream.StreamClosedError, tornado.websocket.WebSocketClosedError):
                pass  # Tornado saw the stream go; its on_close removes the socket
