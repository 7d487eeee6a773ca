"""The WebSocket hub: the sockets of this node, their rooms, and delivery to them.

Rooms are plain strings (``user:<id>``, ``conversation:<id>``, anything a plugin names). The
hub keeps the local members of each room, asks the broker to subscribe a room when its first
local member joins and to unsubscribe it when the last one leaves, and delivers events:

- ``publish(room, type, data)`` encodes the JSON text once and builds the WebSocket frame once,
  hands the same bytes to every local member, then gives the JSON text to the broker for the
  other nodes, each of which builds its frame once in ``on_remote_message``;
- ``send(conn, type, data, id)`` sends one frame to one socket (replies, ``ready``).

Delivery to one socket is the inner loop of every broadcast, so it does as little as the
protocol allows: when the socket's ``IOStream`` has nothing queued, the prebuilt frame goes
straight to ``socket.send``; only what the kernel does not take is queued with
``IOStream.write`` (see ``Hub._hand`` for the Tornado internals this relies on). A socket
whose queue would grow past ``ws_outbound_limit`` is closed with 4408 instead. One turn of the
loop hands frames to at most ``SOCKETS_PER_TURN`` sockets: a bigger room is told over several
turns, and frames handed out meanwhile wait behind it in the hub's outbox, in order.

This module must never:

- block the IOLoop, or await between building a frame and handing it to the local members;
- encode JSON or build a WebSocket frame per recipient (once per broadcast, and once per
  payload received from another node);
- write to a socket out of order with Tornado's own writes (acks, pongs, close frames go
  through its ``IOStream`` queue; a direct send happens only when that queue is empty), or
  after its close frame;
- buffer more than ``ws_outbound_limit`` bytes for one socket: a slow consumer is closed
  (4408), it reconnects and catches up with ``sinceSeq``;
- subscribe or unsubscribe the broker's control room, or let a broker failure reach a caller;
- be called from any thread but the IOLoop's (nothing here is locked).

Keep-alive: the hub's ``Pinger`` (``vachat.pings``) pings every attached socket from one
timer (``ws_ping_interval``) and closes one that does not pong within ``ws_ping_timeout``;
Tornado's own per-socket pinging is off (``websocket_ping_interval=0``).

Holding: ``join(conn, room, hold=True)`` makes the socket a member at once but keeps the
room's frames for it aside, in order, until ``release(conn, room, seq=…, drop=…)``. A plugin
that answers a join with a snapshot (chat's replay of missed messages) reads the snapshot after
joining and releases after its answer went out, so live frames never precede the answer and
nothing published in between is lost. Held frames count against ``ws_outbound_limit`` like
queued ones (4408 past it).

Sequenced rooms (``sequence_rooms(prefix, read_after)``; chat's ``conversation:<id>``): a frame
whose ``data.seq`` is an integer is one change of the room's sequence, numbered in the
transaction that made it. Per room, the node remembers the last seq it delivered and delivers
each change once and in order: a seq at or below it is a repeat (dropped); one past the next
waits in ``pending`` for the missing ones, which come live (publications of two nodes may
cross) or, after ``GAP_WAIT_SECS``, from ``read_after(room, last)`` (the database). A socket
released with ``seq=S`` (its snapshot covers every change up to S) skips the changes up to S
whenever they arrive. When the broker's connection returns after an outage, every sequenced
room reads what came after its last seq (nothing published meanwhile reached this node), and
the node tells the others which rooms it could not publish to, so they read too. Frames
without ``data.seq`` (typing, AI deltas) flow as before, unnumbered.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import socket
import struct
from typing import Any, Awaitable, Callable, Generator, Iterable

import tornado
import tornado.iostream

from .broker import CONTROL_ROOM
from .pings import PING_TIMED_OUT, Pinger
from .wire import json_dumpb

__all__ = [
    "Hub", "Peer", "build_frame", "encode_event", "CONTROL_ROOM", "CLOSE_TOO_SLOW",
    "fast_path_available",
]

log = logging.getLogger("vachat.hub")

# Close code for a consumer that cannot keep up; it should reconnect and join with ``sinceSeq``.
CLOSE_TOO_SLOW = 4408
# The most sockets one turn of the IOLoop hands frames to. A loopback send costs about 10 µs
# (the kernel does the receiver's work too), so one broadcast to a room of 1,000 held the loop
# about 10 ms while every other socket waited; a bigger room is told over several turns, and
# what is handed out meanwhile waits behind it in the outbox (see ``Hub._fan_out``).
SOCKETS_PER_TURN = 256
# Broadcasts the outbox holds at most: past it, all of them are handed out at once. The loop
# then stalls as it did before the outbox, and the senders with it, rather than let a node
# that cannot keep up grow a queue without end.
OUTBOX_LIMIT = 64
# At shutdown, sockets get this long (s) to answer our close frame before they are dropped:
# a healthy client answers in milliseconds even on a loaded node, and it must stay well inside
# the 30 s drain budget of SIGTERM.
CLOSE_ALL_GRACE_SECONDS = 2.0
# The control operations the core defines; plugins may add theirs with ``on_control``.
CONTROL_DISCONNECT = "disconnect"
# "Read these sequenced rooms back": sent by a node whose publications were lost to a broker
# outage, once its connection returns.
CONTROL_RESYNC = "resync"
# A change seq missing this long is taken as lost (its publication failed or went to a broker
# that was down) and read from the database: publications of two nodes arrive out of order by
# milliseconds, so this rarely reads for nothing, and a lost change still arrives in well
# under a second.
GAP_WAIT_SECS = 0.5
# A read-back that failed (the database away) is tried again after this, doubling up to the
# cap: soon enough to deliver within seconds of the database's return, rare enough not to
# flood it (or the log) meanwhile.
READ_BACK_RETRY_SECS = 0.5
READ_BACK_RETRY_MAX_SECS = 5.0

# A ``drop`` filter (see ``release``) says, of a frame ``(type, data)``: True (drop it), False
# (keep it) or None (keep it, and the filter is spent: no later frame can match).
DropFilter = Callable[[str, Any], "bool | None"]
# ``read_after(room, seq)``: the room's changes after ``seq`` as ``([(seq, type, data)], upto)``,
# ``upto`` the seq the frames bring a reader up to (see ``sequence_rooms``).
ReadAfter = Callable[[str, int], Awaitable[tuple[list[tuple[int, str, Any]], int]]]
# ``callback(room, data)`` of ``Hub.watch``.
Watcher = Callable[[str, Any], None]

# RFC 6455 §5.2: FIN + opcode 1 (text). Server frames are never masked, never compressed.
_FIN_TEXT = 0x81
_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack


def build_frame(payload: bytes) -> bytes:
    """The complete WebSocket text frame carrying ``payload`` (UTF-8 JSON), server side."""
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 65536:
        return _HEADER_16(_FIN_TEXT, 126, size) + payload
    return _HEADER_64(_FIN_TEXT, 127, size) + payload


def encode_event(event_type: str, data: Any, id: Any = None) -> bytes:
    """The UTF-8 JSON text of the server frame ``{"type", "data", "id"?}``."""
    message: dict[str, Any] = {"type": event_type, "data": data}
    if id is not None:
        message["id"] = id
    return json_dumpb(message)


# ---------------------------------------------------------------------------
# The Tornado internals of the fast path, checked once against the running Tornado
# ---------------------------------------------------------------------------

_fast_path: bool | None = None


def fast_path_available(stream: Any) -> bool:
    """Whether this Tornado's ``IOStream`` has the internals the direct send relies on.

    Checked on the first socket of the process (6.6.1 when written): ``_closed`` (bool),
    ``_write_buffer`` (a ``_StreamBuffer`` whose ``_size`` counts queued-but-unsent bytes; it
    becomes ``None`` once the stream closes) and ``socket``. When they are missing, every frame
    goes through the public ``IOStream.write``: slower, still correct, still built once.
    """
    global _fast_path
    if _fast_path is None:
        buffer = getattr(stream, "_write_buffer", None)
        _fast_path = (
            isinstance(getattr(stream, "_closed", None), bool)
            and isinstance(buffer, getattr(tornado.iostream, "_StreamBuffer", ()))
            and isinstance(getattr(buffer, "_size", None), int)
            and len(buffer) == buffer._size
        )
        if not _fast_path:
            log.warning("Tornado %s: IOStream internals changed; WebSocket fan-out uses "
                        "IOStream.write for every frame (slower)", tornado.version)
    return _fast_path


def _verdict(drop: DropFilter, frame: tuple[str, Any]) -> bool | None:
    """``drop(type, data)``; a filter that fails keeps the frame (a duplicate beats a gap)."""
    try:
        return drop(*frame)
    except Exception:
        log.exception("a hub release filter failed")
        return None


def _parsed(payload: bytes) -> tuple[str, Any]:
    """``(type, data)`` of a frame's JSON text, for the hub's own decisions (once per payload)."""
    try:
        message = json.loads(payload)
        return message.get("type", ""), message.get("data")
    except (ValueError, AttributeError):
        return "", None


def _seq_of(data: Any) -> int | None:
    seq = data.get("seq") if isinstance(data, dict) else None
    return seq if type(seq) is int else None


def _direct_socket(stream: Any) -> socket.socket | None:
    """The socket the fast path may ``send`` to: plain TCP only. TLS streams (``SSLIOStream``)
    keep their own write state, so their frames always go through ``IOStream.write``."""
    if type(stream) is not tornado.iostream.IOStream or not fast_path_available(stream):
        return None
    sock = getattr(stream, "socket", None)
    return sock if isinstance(sock, socket.socket) else None


def _queued(stream: Any) -> int:
    """Bytes handed to ``stream`` and not yet taken by the kernel."""
    buffer = getattr(stream, "_write_buffer", None)
    return len(buffer) if buffer is not None else 0


class _Ready:
    """An awaitable that is already done (``join`` of a room that is already subscribed)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # noqa: unreachable; makes this a generator


_READY = _Ready()


class Peer:
    """The hub's record of one open socket. ``conn`` is the ``WebSocketHandler``."""

    __slots__ = ("conn", "proto", "stream", "sock", "rooms", "user_id", "session_id", "ping_slot", "awaiting_pong")

    def __init__(self, conn: Any, proto: Any, stream: Any) -> None:
        self.conn = conn
        self.proto = proto  # WebSocketProtocol13: ``server_terminated`` once a close frame went
        self.stream = stream
        self.sock = _direct_socket(stream)
        # A tuple: most sockets are in one or a few rooms (their user's, a conversation), where
        # a set cost 216 bytes each; joins and leaves are rare and the tuple short.
        self.rooms: tuple[str, ...] = ()
        self.user_id: str | None = None
        self.session_id: str | None = None
        self.ping_slot = 0  # kept by the hub's Pinger
        self.awaiting_pong = False

    @property
    def closing(self) -> bool:
        return self.proto.server_terminated or self.stream.closed()


class _Broadcast:
    """One frame waiting in the outbox for ``peers[next:]`` (see ``Hub._fan_out``)."""

    __slots__ = ("peers", "frame", "exclude", "next")

    def __init__(self, peers: tuple[Peer, ...], frame: bytes, exclude: Peer | None) -> None:
        self.peers = peers
        self.frame = frame
        self.exclude = exclude
        self.next = 0


class _Held:
    """The frames of one room kept aside for one socket until ``Hub.release``: ``(seq or None,
    payload, (type, data) or None)`` each."""

    __slots__ = ("frames", "size")

    def __init__(self) -> None:
        self.frames: list[tuple[int | None, bytes, tuple[str, Any] | None]] = []
        self.size = 0


class _Order:
    """The sequence state of one sequenced room on this node (see the module docstring)."""

    __slots__ = ("last", "pending", "floors", "gap", "catching", "again")

    def __init__(self) -> None:
        #: the last seq delivered to the room's members; None until the first member's
        #: snapshot says where the room stands (its release).
        self.last: int | None = None
        #: seq → payload: changes that came before the ones they follow, or while unknown.
        self.pending: dict[int, bytes] = {}
        #: released sockets whose snapshot covers changes up to this seq, past ``last``.
        self.floors: dict[Peer, int] = {}
        self.gap: asyncio.TimerHandle | None = None
        self.catching = False  # a read of the changes after ``last`` is under way
        self.again = False  # ... and another was asked for meanwhile


class _NullMetric:
    def labels(self, *args: Any) -> "_NullMetric":
        return self

    def inc(self, amount: float = 1) -> None:
        pass


class Hub:
    """Local sockets and rooms of one node; see the module docstring."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.outbound_limit: int = app.config.ws_outbound_limit
        self.broker: Any = None  # set by start(): until then delivery is local only
        self._peers: dict[Any, Peer] = {}
        self._rooms: dict[str, set[Peer]] = {}
        self._by_user: dict[str, set[Peer]] = {}
        self._by_session: dict[str, set[Peer]] = {}
        self._subscribed: set[str] = set()  # rooms the broker was asked to subscribe
        self._syncing: dict[str, asyncio.Task[None]] = {}
        self._holds: dict[str, dict[Peer, _Held]] = {}  # room → sockets whose frames are held
        self._filters: dict[str, dict[Peer, DropFilter]] = {}  # room → released sockets still filtering
        self._readers: list[tuple[str, ReadAfter]] = []  # (room prefix, read_after) of sequenced rooms
        self._orders: dict[str, _Order] = {}  # sequenced rooms with local members
        self._unsent: set[str] = set()  # sequenced rooms whose publications the broker dropped
        self._watchers: dict[str, list[tuple[str, Watcher]]] = {}  # event type → (room prefix, callback)
        self._watched_prefixes: tuple[str, ...] = ()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._control: dict[str, Callable[[dict[str, Any]], Any]] = {
            CONTROL_DISCONNECT: self._on_disconnect_control,
            CONTROL_RESYNC: self._on_resync_control,
        }
        self._emptied: asyncio.Event | None = None
        self._outbox: collections.deque[_Broadcast] = collections.deque()
        self._outbox_turn: asyncio.Handle | None = None  # the next turn of the outbox, when one is due
        self._handing_out = False  # inside _hand_out: a close must not hand out again
        config = app.config
        #: One timer pings every socket (Tornado's websocket_ping_interval would run a task per socket).
        self.pinger = (Pinger(config.ws_ping_interval, config.ws_ping_timeout, self._ping_timed_out)
                       if config.ws_ping_interval > 0 else None)
        self._register_metrics()

    def _register_metrics(self) -> None:
        registry = getattr(getattr(self.app, "metrics", None), "registry", None)
        self._frames_sent: Any = _NullMetric()
        self._forced_closes: Any = _NullMetric()
        if registry is None:  # unit tests with a bare app
            return
        from prometheus_client import Counter, Gauge

        Gauge("vachat_ws_connections", "Open WebSocket connections on this node",
              registry=registry).set_function(lambda: len(self._peers))
        Gauge("vachat_ws_rooms", "Rooms with at least one local member",
              registry=registry).set_function(lambda: len(self._rooms))
        self._frames_sent = Counter("vachat_ws_frames_sent", "Event frames handed to sockets",
                                    registry=registry)
        self._forced_closes = Counter(
            "vachat_ws_forced_closes", "Sockets closed by the server, by close code",
            ("code",), registry=registry)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start receiving other nodes' publications; subscribe rooms joined before now."""
        self.broker = self.app.broker
        await self.broker.start(self.on_remote_message, on_resumed=self.on_broker_resumed)
        for room in list(self._rooms):
            self._schedule_sync(room)

    async def close_all(self, code: int = 1001, reason: str = "Server shutting down") -> None:
        """Close every local socket with ``code`` and wait (briefly) for them to go."""
        for peer in list(self._peers.values()):
            self.close(peer.conn, code, reason)
        if not self._peers:
            return
        self._emptied = asyncio.Event()
        try:
            await asyncio.wait_for(self._emptied.wait(), CLOSE_ALL_GRACE_SECONDS)
        except asyncio.TimeoutError:
            log.info("dropping %d sockets that did not answer the close frame", len(self._peers))
            for peer in list(self._peers.values()):
                peer.stream.close()
                self.detach(peer.conn)
        finally:
            self._emptied = None

    # -- sockets -----------------------------------------------------------------------

    def attach(self, conn: Any) -> Peer:
        """Register an open socket (a ``WebSocketHandler`` whose handshake is done)."""
        proto = conn.ws_connection
        peer = Peer(conn, proto, proto.stream)
        self._peers[conn] = peer
        if self.pinger is not None:
            self.pinger.add(peer)
        return peer

    def _ping_timed_out(self, peer: Peer) -> None:
        self.close(peer.conn, *PING_TIMED_OUT)

    def identify(self, conn: Any, user_id: str, session_id: str | None) -> None:
        """Record who is on ``conn``, so ``disconnect`` finds it."""
        peer = self._peers.get(conn)
        if peer is None:
            return
        self._unindex(peer)
        peer.user_id, peer.session_id = user_id, session_id
        self._by_user.setdefault(user_id, set()).add(peer)
        if session_id is not None:
            self._by_session.setdefault(session_id, set()).add(peer)

    def detach(self, conn: Any) -> None:
        """Forget a closed socket: leave its rooms. Idempotent."""
        peer = self._peers.pop(conn, None)
        if peer is None:
            return
        if self.pinger is not None:
            self.pinger.remove(peer)
        self._leave_all(peer)
        self._unindex(peer)
        if not self._peers and self._emptied is not None:
            self._emptied.set()

    def _unindex(self, peer: Peer) -> None:
        for index, key in ((self._by_user, peer.user_id), (self._by_session, peer.session_id)):
            members = index.get(key) if key is not None else None
            if members is not None:
                members.discard(peer)
                if not members:
                    del index[key]

    def close(self, conn: Any, code: int, reason: str) -> None:
        """Close ``conn`` with ``code`` unless it is already closing."""
        peer = self._peers.get(conn)
        if peer is not None and peer.closing:
            return
        if self._outbox and not self._handing_out:
            # What was handed out before the close goes out before its close frame, as it did
            # when every broadcast was handed out at once.
            self._hand_out(everything=True)
        if code >= 4000:  # the server's own verdicts (4401, 4403, 4408, 4429), not shutdowns
            self._forced_closes.labels(str(code)).inc()
            log.info("closing a WebSocket", extra={
                "code": code, "reason": reason, "userId": peer.user_id if peer else None})
        try:
            conn.close(code, reason)
        except Exception:  # a socket torn down under us; on_close will detach it
            log.debug("closing a socket failed", exc_info=True)

    @property
    def connection_count(self) -> int:
        """Open sockets on this node, authenticated or not."""
        return len(self._peers)

    @property
    def user_count(self) -> int:
        """Distinct users with at least one authenticated socket on this node."""
        return len(self._by_user)

    def connections_of(self, user_id: str) -> list[Any]:
        return [peer.conn for peer in self._by_user.get(user_id, ())]

    def connection_count_of(self, user_id: str) -> int:
        """``len(connections_of(user_id))`` without building the list (checked on every
        upgrade, twice)."""
        peers = self._by_user.get(user_id)
        return len(peers) if peers is not None else 0

    def connections(self) -> list[Any]:
        """Every authenticated socket on this node."""
        return [peer.conn for peers in self._by_user.values() for peer in peers]

    # -- rooms -------------------------------------------------------------------------

    def join(self, conn: Any, room: str, *, hold: bool = False) -> Awaitable[None]:
        """Add ``conn`` to ``room`` now. Await the result to be sure other nodes' publications
        reach it too (the broker subscription, made when the room's first local member joins).

        With ``hold``, the room's frames for ``conn`` are kept aside until ``release``.
        """
        if room == CONTROL_ROOM:
            raise ValueError(f"{CONTROL_ROOM!r} is reserved for node-wide control messages")
        peer = self._peers.get(conn)
        if peer is None or peer.closing:
            return _READY
        if hold:
            self._holds.setdefault(room, {})[peer] = _Held()
        members = self._rooms.get(room)
        if members is None:
            members = self._rooms[room] = set()
            if self._reader_of(room) is not None:
                self._orders[room] = _Order()
        members.add(peer)
        if room not in peer.rooms:
            peer.rooms += (room,)
        if self.broker is None or (room in self._subscribed and room not in self._syncing):
            return _READY
        return asyncio.shield(self._schedule_sync(room))

    def release(self, conn: Any, room: str, drop: DropFilter | None = None, *, seq: int | None = None) -> int:
        """Deliver the frames held for ``conn`` in ``room`` (``join(..., hold=True)``), in
        order, but those its snapshot already carries: in a sequenced room, the changes up to
        ``seq`` (now and whenever they arrive); other frames, those ``drop(type, data)`` says
        to drop. ``drop`` keeps filtering the room's unnumbered frames to ``conn`` until it
        answers None (spent). Returns how many held frames were delivered."""
        peer = self._peers.get(conn)
        held = self._unhold(room, peer)
        if held is None or peer is None:
            return 0
        order = self._orders.get(room)
        if order is not None and seq is not None:
            if order.last is None:
                self._settle(room, order, seq, held)
            elif seq > order.last:
                order.floors[peer] = seq
        elif order is not None and order.last is None and room not in self._holds and order.pending:
            # Released without a snapshot seq and nobody else waits for one: the room starts
            # at the oldest change that came (rather than hold its changes for ever).
            order.last = min(order.pending) - 1
        delivered = 0
        for frame_seq, payload, frame in held.frames:
            if frame_seq is not None:
                if seq is not None and frame_seq <= seq:
                    continue
            elif drop is not None:
                verdict = _verdict(drop, frame or _parsed(payload))
                if verdict is None:
                    drop = None
                elif verdict:
                    continue
            delivered += self._write(peer, build_frame(payload))
        if drop is not None and room in peer.rooms:
            self._filters.setdefault(room, {})[peer] = drop
        if order is not None:
            self._drain(room, order)
        return delivered

    def _settle(self, room: str, order: _Order, seq: int, released: _Held) -> None:
        """The room's first snapshot says where it stands: the changes up to ``seq`` are
        told. Those that came meanwhile wait in ``pending``: the sockets still held get them
        (their own snapshots, maybe older, decide at their release)."""
        order.last = seq
        told = sorted(s for s in order.pending if s <= seq)
        for held in (self._holds.get(room) or {}).values():
            if held is not released:
                for told_seq in told:
                    self._keep(held, told_seq, order.pending[told_seq], None)
        for told_seq in told:
            del order.pending[told_seq]

    def _keep(self, held: _Held, seq: int | None, payload: bytes, frame: tuple[str, Any] | None) -> bool:
        held.frames.append((seq, payload, frame))
        held.size += len(payload)
        return held.size <= self.outbound_limit

    def _unhold(self, room: str, peer: Peer | None) -> _Held | None:
        holds = self._holds.get(room)
        if holds is None or peer is None:
            return None
        held = holds.pop(peer, None)
        if not holds:
            del self._holds[room]
        return held

    def _hold(self, room: str, members: set[Peer], payload: bytes, frame: tuple[str, Any] | None,
              seq: int | None, exclude: Any) -> set[Peer]:
        """Keep ``payload`` for the held members, skip it for those whose snapshot or filter
        already covers it; return the members to deliver to now."""
        if exclude is not None and not isinstance(exclude, Peer):
            exclude = self._peers.get(exclude)
        skipped: list[Peer] = []
        holds = self._holds.get(room)
        if holds:
            for peer, held in holds.items():
                if peer in members and peer is not exclude:
                    skipped.append(peer)
                    if not self._keep(held, seq, payload, frame):
                        self.close(peer.conn, CLOSE_TOO_SLOW, "too slow")
        if seq is None:
            filters = self._filters.get(room)
            if filters:
                frame = frame or _parsed(payload)
                for peer, drop in list(filters.items()):
                    verdict = _verdict(drop, frame)
                    if verdict is None:
                        del filters[peer]
                    elif verdict:
                        skipped.append(peer)
                if not filters:
                    del self._filters[room]
        else:
            order = self._orders.get(room)
            if order is not None and order.floors:
                skipped.extend(peer for peer, floor in order.floors.items() if seq <= floor)
        return members.difference(skipped) if skipped else members

    def leave(self, conn: Any, room: str) -> None:
        """Remove ``conn`` from ``room`` (the broker unsubscribes when it was the last)."""
        peer = self._peers.get(conn)
        if peer is not None:
            self._leave(peer, room)

    def leave_all(self, conn: Any) -> None:
        peer = self._peers.get(conn)
        if peer is not None:
            self._leave_all(peer)

    def rooms_of(self, conn: Any) -> set[str]:
        peer = self._peers.get(conn)
        return set(peer.rooms) if peer is not None else set()

    def room_size(self, room: str) -> int:
        """Local members of ``room``."""
        members = self._rooms.get(room)
        return len(members) if members else 0

    def _leave(self, peer: Peer, room: str) -> None:
        members = self._rooms.get(room)
        if members is None or peer not in members:
            return
        members.discard(peer)
        peer.rooms = tuple(r for r in peer.rooms if r != room)
        if self._holds:
            self._unhold(room, peer)
        filters = self._filters.get(room)
        if filters is not None:
            filters.pop(peer, None)
            if not filters:
                del self._filters[room]
        order = self._orders.get(room)
        if order is not None:
            order.floors.pop(peer, None)
        if not members:
            del self._rooms[room]
            if order is not None:
                self._forget_order(room, order)
            if self.broker is not None:
                self._schedule_sync(room)

    def _leave_all(self, peer: Peer) -> None:
        for room in peer.rooms:  # a tuple: _leave replaces it, this loop keeps its own
            self._leave(peer, room)

    def _schedule_sync(self, room: str) -> "asyncio.Task[None]":
        task = self._syncing.get(room)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._sync_room(room))
            self._syncing[room] = task
        return task

    async def _sync_room(self, room: str) -> None:
        """Bring the broker's subscription of ``room`` in line with local membership. One task
        per room, looping until it converges, so join/leave races cannot reorder the calls."""
        try:
            while True:
                wanted, have = room in self._rooms, room in self._subscribed
                if wanted == have:
                    return
                try:
                    if wanted:
                        await self.broker.subscribe(room)
                    else:
                        await self.broker.unsubscribe(room)
                except Exception:  # the broker promises not to raise; a bug must not stick
                    log.exception("broker %s of room %s failed",
                                  "subscribe" if wanted else "unsubscribe", room)
                if wanted:
                    self._subscribed.add(room)
                else:
                    self._subscribed.discard(room)
        finally:
            self._syncing.pop(room, None)

    # -- delivery ----------------------------------------------------------------------

    async def publish(self, room: str, event_type: str, data: Any, *, exclude: Any = None) -> int:
        """Send event ``{"type", "data"}`` to every member of ``room`` on every node.

        Returns the number of local sockets it was handed to. ``exclude`` (a local socket, e.g.
        the sender of a typing indicator) is skipped; a change of a sequenced room (``data.seq``)
        goes to every member.
        """
        if room == CONTROL_ROOM:
            raise ValueError(f"{CONTROL_ROOM!r} carries control messages, not events")
        payload = encode_event(event_type, data)
        delivered = self._route(room, payload, (event_type, data), exclude)
        if self.broker is not None:
            sent = await self.broker.publish(room, payload)
            if sent is False and self._reader_of(room) is not None:
                self._unsent.add(room)
        return delivered

    def publish_local(self, room: str, event_type: str, data: Any, *, exclude: Any = None) -> int:
        """Like ``publish`` for this node's members only (synchronous; for events another
        node will publish itself)."""
        if room not in self._rooms:
            return 0
        return self._route(room, encode_event(event_type, data), (event_type, data), exclude)

    def on_remote_message(self, room: str, payload: bytes) -> None:
        """The broker's callback: another node's publication to ``room``."""
        if room == CONTROL_ROOM:
            self._on_control(payload)
            return
        if room in self._rooms:
            if not isinstance(payload, bytes):
                payload = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
            self._route(room, payload, None, None)

    def watch(self, prefix: str, event_type: str, callback: Watcher) -> None:
        """Call ``callback(room, data)`` for every ``event_type`` publication, from any node,
        to a room named ``prefix…`` that has members on this node (see the interface)."""
        self._watchers.setdefault(event_type, []).append((prefix, callback))
        self._watched_prefixes = (*self._watched_prefixes, prefix)

    def _tell_watchers(self, room: str, frame: tuple[str, Any]) -> None:
        for prefix, callback in self._watchers.get(frame[0], ()):
            if room.startswith(prefix):
                try:
                    callback(room, frame[1])
                except Exception:
                    log.exception("a hub watcher of %r failed", frame[0])

    def _route(self, room: str, payload: bytes, frame: tuple[str, Any] | None, exclude: Any) -> int:
        """Deliver one publication to the room's local members: a change of a sequenced room
        in its order, once (see the module docstring); anything else at once."""
        if self._watched_prefixes and room.startswith(self._watched_prefixes) and room in self._rooms:
            if frame is None:  # another node's: parsed once, here, whoever receives it
                frame = _parsed(payload)
            self._tell_watchers(room, frame)
        order = self._orders.get(room)
        if order is not None:
            if frame is None:  # another node's: parsed once, here, whoever receives it
                frame = _parsed(payload)
            seq = _seq_of(frame[1])
            if seq is not None:
                return self._sequence(room, order, seq, payload)
        return self._deliver(room, payload, frame, None, exclude)

    def _deliver(self, room: str, payload: bytes, frame: tuple[str, Any] | None, seq: int | None,
                 exclude: Any) -> int:
        members = self._rooms.get(room)
        if not members:
            return 0
        if self._holds or self._filters or seq is not None:
            members = self._hold(room, members, payload, frame, seq, exclude)
        return self._fan_out(members, build_frame(payload), exclude) if members else 0

    def _sequence(self, room: str, order: _Order, seq: int, payload: bytes) -> int:
        if order.last is None and room not in self._holds:
            order.last = seq - 1  # members joined without a snapshot: they start here
        if order.last is not None and seq <= order.last:
            return 0  # told already (live from two paths, or read back after an outage)
        if order.last is None or order.catching or seq != order.last + 1:
            order.pending[seq] = payload
            if order.last is not None and not order.catching:
                self._watch_gap(room, order)
            return 0
        delivered = self._deliver(room, payload, None, seq, None)
        order.last = seq
        if order.pending or order.floors:
            self._drain(room, order)
        return delivered

    def _drain(self, room: str, order: _Order) -> None:
        """Deliver the pending changes that now follow ``last``; watch for what is missing."""
        if order.last is None or order.catching:
            return
        for seq in sorted(order.pending):
            if seq <= order.last:
                del order.pending[seq]
            elif seq == order.last + 1:
                self._deliver(room, order.pending.pop(seq), None, seq, None)
                order.last = seq
        if order.floors:
            for peer in [peer for peer, floor in order.floors.items() if floor <= order.last]:
                del order.floors[peer]
        if order.pending:
            self._watch_gap(room, order)
        elif order.gap is not None:
            order.gap.cancel()
            order.gap = None

    def _watch_gap(self, room: str, order: _Order) -> None:
        if order.gap is None:
            order.gap = asyncio.get_running_loop().call_later(GAP_WAIT_SECS, self._gap_timed_out, room, order)

    def _gap_timed_out(self, room: str, order: _Order) -> None:
        order.gap = None
        if order.pending and self._orders.get(room) is order:
            self.catch_up(room)

    # -- sequenced rooms -----------------------------------------------------------------

    def sequence_rooms(self, prefix: str, read_after: ReadAfter) -> None:
        """Make the rooms named ``prefix…`` sequenced: their frames carrying an integer
        ``data.seq`` are delivered once and in order, and what a node misses is read back
        with ``read_after(room, seq)`` (see the module docstring)."""
        self._readers.append((prefix, read_after))

    def _reader_of(self, room: str) -> ReadAfter | None:
        for prefix, read_after in self._readers:
            if room.startswith(prefix):
                return read_after
        return None

    def catch_up(self, room: str) -> None:
        """Read back and deliver the room's changes after the last one delivered here."""
        order = self._orders.get(room)
        if order is None or order.last is None:
            return
        if order.catching:
            order.again = True
            return
        order.catching = True
        if order.gap is not None:
            order.gap.cancel()
            order.gap = None
        task = asyncio.get_running_loop().create_task(self._catch_up(room, order))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _catch_up(self, room: str, order: _Order) -> None:
        read_after = self._reader_of(room)
        retry = READ_BACK_RETRY_SECS
        try:
            while read_after is not None and self._orders.get(room) is order:
                order.again = False
                after = order.last
                assert after is not None
                try:
                    frames, upto = await read_after(room, after)
                except Exception as error:
                    if retry == READ_BACK_RETRY_SECS:
                        log.warning("reading back the changes of %s failed (%s); retrying", room, error)
                    await asyncio.sleep(retry)
                    retry = min(retry * 2, READ_BACK_RETRY_MAX_SECS)
                    continue
                retry = READ_BACK_RETRY_SECS
                if self._orders.get(room) is not order:
                    return
                for seq, event_type, data in frames:
                    if seq > order.last:
                        self._deliver(room, encode_event(event_type, data), (event_type, data), seq, None)
                        order.last = seq
                order.last = max(order.last, upto)
                if upto <= after and not order.again:
                    break
                if not frames and not order.again:
                    break
        finally:
            order.catching = False
            if self._orders.get(room) is order:
                self._drain(room, order)

    def _forget_order(self, room: str, order: _Order) -> None:
        del self._orders[room]
        if order.gap is not None:
            order.gap.cancel()

    def on_broker_resumed(self) -> None:
        """The broker's connection came back after an outage: whatever other nodes published
        meanwhile never reached this node, and this node's failed publications never reached
        them. Read back every sequenced room here; ask the others to read back ours."""
        for room in list(self._orders):
            self.catch_up(room)
        if self._unsent:
            rooms, self._unsent = sorted(self._unsent), set()
            task = asyncio.get_running_loop().create_task(self.send_control(CONTROL_RESYNC, {"rooms": rooms}))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _on_resync_control(self, message: dict[str, Any]) -> None:
        for room in message.get("rooms") or ():
            if isinstance(room, str):
                self.catch_up(room)

    def send(self, conn: Any, event_type: str, data: Any = None, id: Any = None) -> bool:
        """Send one event to one socket. False if it is closing or gone."""
        peer = self._peers.get(conn)
        if peer is None:
            return False
        return self._write(peer, build_frame(encode_event(event_type, data, id)))

    def _fan_out(self, members: Iterable[Peer], frame: bytes, exclude: Any) -> int:
        """Hand ``frame`` to each member, behind every frame handed out before it; returns
        how many it was handed (or queued) to.

        At most ``SOCKETS_PER_TURN`` sockets a turn of the loop: a bigger broadcast hands the
        first ones their frame now and waits in the outbox for the next turns (``_hand_out``),
        and while the outbox holds anything, every frame (a reply to one socket too) queues
        behind it, so that each socket still gets its frames in the order they were handed
        out. A socket closed meanwhile is skipped; ``close`` hands out the outbox first."""
        if exclude is not None and not isinstance(exclude, Peer):
            exclude = self._peers.get(exclude)
        # A copy: a failed write may close a socket, and no callback may resize the set mid-loop.
        peers = tuple(members)
        if not self._outbox and len(peers) <= SOCKETS_PER_TURN:
            return self._hand(peers, 0, len(peers), frame, exclude)
        self._outbox.append(_Broadcast(peers, frame, exclude))
        if len(self._outbox) > OUTBOX_LIMIT:
            self._hand_out(everything=True)
        elif self._outbox_turn is None:  # nothing under way: the first share goes now
            self._hand_out()
        if len(peers) == 1:  # a reply: whether it can still go out
            return int(peers[0] is not exclude and not peers[0].closing)
        return len(peers) - (exclude is not None and exclude in peers)

    def _hand_out(self, everything: bool = False) -> None:
        """Hand out the outbox, oldest first: ``SOCKETS_PER_TURN`` sockets' worth, then
        again on the next turn of the loop while anything is left (or all of it now)."""
        if self._outbox_turn is not None:
            self._outbox_turn.cancel()
            self._outbox_turn = None
        budget = (sum(len(broadcast.peers) - broadcast.next for broadcast in self._outbox) if everything
                  else SOCKETS_PER_TURN)
        self._handing_out = True
        try:
            while self._outbox and budget > 0:
                broadcast = self._outbox[0]
                end = min(broadcast.next + budget, len(broadcast.peers))
                self._hand(broadcast.peers, broadcast.next, end, broadcast.frame, broadcast.exclude)
                budget -= end - broadcast.next
                broadcast.next = end
                if end == len(broadcast.peers):
                    self._outbox.popleft()
        finally:
            self._handing_out = False
        if self._outbox:
            self._outbox_turn = asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._outbox_turn = None
        self._hand_out()

    def _hand(self, peers: tuple[Peer, ...], start: int, end: int, frame: bytes, exclude: Peer | None) -> int:
        """Hand ``frame`` to ``peers[start:end]`` now; the per-socket inner loop of every
        broadcast.

        Relies on Tornado internals (checked by ``fast_path_available``; 6.6.1):

        - ``IOStream._closed``: the stream is gone, skip it;
        - ``IOStream._write_buffer._size``: bytes Tornado has queued and the kernel has not
          taken. Zero means every earlier write (101 response, acks, pongs) is in the kernel,
          so a direct ``socket.send`` keeps the order; otherwise the frame is queued behind;
        - ``IOStream.socket``: the non-blocking socket Tornado itself sends on.

        Nothing of Tornado's accounting changes on a direct send: ``_total_write_index`` and
        ``_total_write_done_index`` only order Tornado's own write futures, and we add neither
        bytes to its queue nor a future. ``WebSocketProtocol13.server_terminated`` (public)
        says a close frame was sent: nothing may follow it.
        """
        size = len(frame)
        delivered = 0
        for index in range(start, end):
            peer = peers[index]
            if peer.proto.server_terminated or peer is exclude:
                continue
            stream = peer.stream
            if stream._closed:
                continue
            sock = peer.sock
            if sock is not None and not stream._write_buffer._size:
                try:
                    sent = sock.send(frame)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    # Reset or broken pipe: let Tornado's own write see it and close the stream.
                    sent = 0
                if sent == size:
                    delivered += 1
                    continue
                if self._queue(peer, frame, sent):
                    delivered += 1
            elif self._queue(peer, frame, 0):
                delivered += 1
        self._frames_sent.inc(delivered)
        return delivered

    def _write(self, peer: Peer, frame: bytes) -> bool:
        """``_fan_out`` for one socket."""
        return self._fan_out((peer,), frame, None) == 1

    def _queue(self, peer: Peer, frame: bytes, offset: int) -> bool:
        """Queue what the kernel did not take, or close a consumer that fell too far behind."""
        stream = peer.stream
        queued = _queued(stream)
        if queued and queued + len(frame) - offset > self.outbound_limit:
            self.close(peer.conn, CLOSE_TOO_SLOW, "too slow")
            return False
        try:
            stream.write(memoryview(frame)[offset:] if offset else frame)
        except tornado.iostream.StreamClosedError:
            return False
        return True

    # -- node-wide control -------------------------------------------------------------

    async def disconnect(self, *, user_id: str | None = None, session_id: str | None = None,
                         code: int = 4401, reason: str = "Session ended") -> int:
        """Close the sockets of ``user_id`` and/or ``session_id`` (both given: both must match)
        on every node. Returns how many were closed on this node."""
        if user_id is None and session_id is None:
            raise ValueError("disconnect needs a user_id or a session_id")
        message = {"userId": user_id, "sessionId": session_id, "code": code, "reason": reason}
        closed = self._disconnect_local(message)
        await self.send_control(CONTROL_DISCONNECT, message)
        return closed

    def on_control(self, op: str, handler: Callable[[dict[str, Any]], Any]) -> None:
        """Run ``handler(message)`` for control messages ``op`` from other nodes."""
        if op in self._control:
            raise ValueError(f"control operation {op!r} is already handled")
        self._control[op] = handler

    async def send_control(self, op: str, message: dict[str, Any]) -> None:
        """Tell every *other* node (their ``on_control`` handler for ``op``); act locally
        yourself."""
        if self.broker is not None:
            await self.broker.publish_control(json_dumpb({**message, "op": op}))

    def _on_control(self, payload: bytes) -> None:
        try:
            message = json.loads(payload)
            handler = self._control[message["op"]]
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring an unknown or malformed control message")
            return
        try:
            handler(message)
        except Exception:
            log.exception("control message %s failed", message.get("op"))

    def _on_disconnect_control(self, message: dict[str, Any]) -> None:
        self._disconnect_local(message)

    def _disconnect_local(self, message: dict[str, Any]) -> int:
        user_id, session_id = message.get("userId"), message.get("sessionId")
        if session_id is not None:
            candidates = self._by_session.get(session_id, ())
        else:
            candidates = self._by_user.get(user_id, ())
        matching = [peer for peer in candidates
                    if (user_id is None or peer.user_id == user_id) and not peer.closing]
        for peer in matching:
            self.close(peer.conn, int(message.get("code") or 4401), str(message.get("reason") or "Session ended"))
        return len(matching)
