"""Fan-out between server nodes: one ``Broker`` interface, an in-process and a Redis implementation.

The WebSocket hub delivers every event to its own sockets itself and hands it to the broker
only to reach *other* nodes. It calls ``subscribe(room)`` when a room gets its first local
member and ``unsubscribe(room)`` when it loses its last, and receives other nodes' publications
through the ``on_message(room, payload)`` callback given to ``start``. Payloads are opaque bytes.

``LocalBroker`` (one process, no Redis) does nothing: there are no other nodes to reach.
``RedisBroker`` maps room ``R`` to the Redis channel ``vachat:room:<db>:R``, ``<db>`` being the
client's database number: Redis keeps keys per database but pub/sub channels are server-wide, so
deployments (or test runs) sharing one server on different databases must not hear each other's
rooms and control messages. On the wire a payload is
prefixed with the publishing node's id and ``|``, so a node drops its own publications (the hub
already delivered them locally). One listener task owns the pub/sub connection: when Redis goes
away it marks the shared ``RedisGuard`` down, reconnects with capped exponential back-off and
re-subscribes every room that still has local members. Messages published while a node is
disconnected are lost to it (Redis pub/sub keeps no history): once re-subscribed it calls
``on_resumed`` (given to ``start``), and the hub reads what it missed back from the database
(sequenced rooms); ``publish`` answers False for a payload it could not send.

Control messages: the reserved room ``CONTROL_ROOM`` ("__control__") reaches every node whatever
rooms it has, e.g. "close every socket of user X". ``RedisBroker`` subscribes to it from
``start`` until ``close``; the hub must not subscribe or unsubscribe it, and, as for rooms, must
act on its own node's control messages itself: ``publish_control`` only tells the others.

This module must never raise a Redis failure to the hub (publish, subscribe and unsubscribe
degrade, log through the guard, and return), never let a failing callback stop the listener,
and never block the IOLoop.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import random
import secrets
from typing import TYPE_CHECKING, Any, Callable

import redis.exceptions

from .redis_client import REDIS_CONNECT_TIMEOUT_SECS, REDIS_ERRORS, RedisGuard
from .tasks import stop_task

if TYPE_CHECKING:
    import redis.asyncio
    from redis.asyncio.client import PubSub

__all__ = [
    "MessageCallback", "Broker", "LocalBroker", "RedisBroker", "make_broker",
    "CONTROL_ROOM", "CHANNEL_PREFIX",
]

log = logging.getLogger("vachat.broker")

MessageCallback = Callable[[str, bytes], None]
ResumedCallback = Callable[[], None]

# The room every node listens to, for broadcasts that are not about one room.
CONTROL_ROOM = "__control__"
# Every broker channel starts with this, so vachat's traffic is recognisable in MONITOR and
# cannot collide with other applications sharing the Redis.
CHANNEL_PREFIX = "vachat:room:"
# Between the sender's node id (hex, so it never contains this byte) and the payload.
WIRE_SEPARATOR = b"|"

# The first reconnect comes quickly, so a blip (a killed connection, a Redis restart) costs
# well under a second of cross-node silence...
BROKER_RECONNECT_MIN_SECS = 0.1
# ...and the back-off doubles up to this, so a returning Redis is noticed within 2 s (the hub
# then reads back what was missed: delivery resumes within 5 s of Redis returning) while a long
# outage costs one connect attempt per node every second or two, not a storm. Each wait is
# jittered down to half so nodes that lost Redis together do not reconnect in lock-step.
BROKER_RECONNECT_MAX_SECS = 2.0
# get_message wakes at least this often, to send keep-alive pings and to notice a rebuild
# requested by a failed subscribe; an idle node pays one cheap wake-up per interval.
BROKER_POLL_SECS = 1.0
# The listener hands the loop back after this many messages read in a row: messages already
# buffered are read without waiting, and a burst from the other nodes (thousands after an
# outage, or under load) was delivered in one step while this node's own sockets waited.
MESSAGES_PER_TURN = 64
# A subscribed connection is otherwise silent, and a half-open TCP connection (peer gone
# without a FIN, e.g. a failed-over host) would look idle for many minutes. Pinging this often
# and giving up when nothing, not even the PONG, comes back within the timeout bounds the time
# a node can go deaf without knowing.
BROKER_PING_INTERVAL_SECS = 5.0
BROKER_PONG_TIMEOUT_SECS = 5.0
# start() waits this long for the first connection attempt to finish, enough for a connect
# timeout and its retry; past it the server starts degraded rather than not at all.
BROKER_START_WAIT_SECS = 2 * REDIS_CONNECT_TIMEOUT_SECS + 1.0
# close() waits this long for SUBSCRIBE/UNSUBSCRIBE commands in flight, then as long for the
# listener to unwind, before closing their PubSub under them.
BROKER_CLOSE_TIMEOUT_SECS = 2.0


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class Broker(abc.ABC):
    """Carries (room, payload) pairs to the other nodes. See the module docstring."""

    def __init__(self) -> None:
        # Random per process: a restarted node is a new node, so nothing stale is mistaken for ours.
        self.node_id: str = secrets.token_hex(8)

    @abc.abstractmethod
    async def start(self, on_message: MessageCallback, *, on_resumed: ResumedCallback | None = None) -> None:
        """Begin receiving: ``on_message(room, payload)`` is called on the IOLoop for each
        publication of another node in a subscribed room (or the control room), and
        ``on_resumed()`` each time receiving works again after a connection was lost (what
        was published meanwhile never arrives)."""

    @abc.abstractmethod
    async def subscribe(self, room: str) -> None:
        """Receive ``room`` from other nodes. Idempotent; never raises on a Redis failure."""

    @abc.abstractmethod
    async def unsubscribe(self, room: str) -> None:
        """Stop receiving ``room``; nothing more is delivered for it once this is called."""

    @abc.abstractmethod
    async def publish(self, room: str, payload: bytes) -> bool:
        """Send ``payload`` to the other nodes subscribed to ``room``. Best effort: a Redis
        failure is logged through the guard and the payload dropped (False); never raises."""

    async def publish_control(self, payload: bytes) -> None:
        """Send ``payload`` to every other node, whatever rooms it has."""
        await self.publish(CONTROL_ROOM, payload)

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop receiving and release connections (not a shared Redis client)."""

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """For ``/health``: ``{"status": "ok" | "down" | "disabled", ...}``."""

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until cross-node delivery works; False if it does not within ``timeout``."""
        return True


class LocalBroker(Broker):
    """A single process: the hub has already delivered locally, so there is nothing to do."""

    async def start(self, on_message: MessageCallback, *, on_resumed: ResumedCallback | None = None) -> None:
        pass

    async def subscribe(self, room: str) -> None:
        pass

    async def unsubscribe(self, room: str) -> None:
        pass

    async def publish(self, room: str, payload: bytes) -> bool:
        return True

    async def close(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"status": "disabled", "nodeId": self.node_id}


class RedisBroker(Broker):
    """Redis pub/sub between nodes, one channel per room, surviving Redis outages."""

    def __init__(self, client: "redis.asyncio.Redis", guard: RedisGuard, *,
                 channel_prefix: str | None = None) -> None:
        super().__init__()
        self._redis = client
        self._guard = guard
        if channel_prefix is None:
            channel_prefix = f"{CHANNEL_PREFIX}{client.connection_pool.connection_kwargs.get('db', 0)}:"
        self._prefix = channel_prefix.encode()
        self._sender = self.node_id.encode() + WIRE_SEPARATOR
        self._rooms: set[str] = set()  # rooms the hub wants, whether or not Redis has them now
        self._on_message: MessageCallback | None = None
        self._on_resumed: ResumedCallback | None = None
        self._pubsub: PubSub | None = None  # set only while connected and fully subscribed
        # Every PubSub made and not yet closed: whoever ends one (the listener on its way out,
        # or close() when the listener does not unwind in time) closes it, once, awaited.
        self._open_pubsubs: set[PubSub] = set()
        # The hub's SUBSCRIBE/UNSUBSCRIBE commands under way, each resolved when it ends.
        self._commands: set[asyncio.Future[None]] = set()
        self._broken: str | None = None  # a failed subscribe asks the listener to rebuild
        self._last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._attempted = asyncio.Event()  # the first connection attempt has finished
        self._closed = False
        self.published = 0
        self.received = 0
        self.dropped = 0  # publications lost to a Redis failure

    # -- the hub's side ------------------------------------------------------------------

    async def start(self, on_message: MessageCallback, *, on_resumed: ResumedCallback | None = None) -> None:
        if self._task is not None or self._closed:
            raise RuntimeError("RedisBroker.start() may be called once")
        self._on_message, self._on_resumed = on_message, on_resumed
        self._task = asyncio.create_task(self._listen(), name=f"vachat-broker-{self.node_id}")
        try:
            await asyncio.wait_for(self._attempted.wait(), BROKER_START_WAIT_SECS)
        except asyncio.TimeoutError:
            log.warning("Redis pub/sub not connected after %.0f s; starting degraded",
                        BROKER_START_WAIT_SECS)

    async def subscribe(self, room: str) -> None:
        if room == CONTROL_ROOM or room in self._rooms:
            return
        self._rooms.add(room)
        # While disconnected the listener subscribes every wanted room when it reconnects.
        pubsub = self._pubsub
        if pubsub is not None:
            await self._command(pubsub, pubsub.subscribe, room)

    async def unsubscribe(self, room: str) -> None:
        if room == CONTROL_ROOM or room not in self._rooms:
            return
        # Removing it first is what stops delivery at once: _dispatch drops rooms not in the set,
        # covering messages already in flight before Redis processes the UNSUBSCRIBE.
        self._rooms.discard(room)
        pubsub = self._pubsub
        if pubsub is not None:
            await self._command(pubsub, pubsub.unsubscribe, room)

    async def publish(self, room: str, payload: bytes) -> bool:
        if self._closed:
            self.dropped += 1
            return False

        async def send() -> bool:
            await self._redis.publish(self._channel(room), self._sender + payload)
            return True

        if await self._guard.attempt("broker", send, lambda: False):
            self.published += 1
            return True
        self.dropped += 1
        return False

    async def close(self) -> None:
        self._closed = True
        self._pubsub = None  # no command starts on it from now
        # A command in flight when its PubSub is closed would take a new connection for it
        # (redis-py connects a PubSub on demand), never to be given back: let it finish first.
        if self._commands:
            await asyncio.wait(set(self._commands), timeout=BROKER_CLOSE_TIMEOUT_SECS)
        task, self._task = self._task, None
        await stop_task(task, BROKER_CLOSE_TIMEOUT_SECS)
        # A listener that did not unwind in time still holds its PubSub: it is closed here,
        # while the loop runs. Left to the listener, it could be closed after the loop is gone,
        # where aclose() cannot schedule its teardown (never awaited) and the connection leaks.
        for pubsub in list(self._open_pubsubs):
            await self._discard(pubsub)

    def status(self) -> dict[str, Any]:
        connected = self._pubsub is not None and not self._broken
        error = None if connected else (self._broken or self._last_error or self._guard.last_error)
        return {
            "status": "ok" if connected else "down",
            "error": error,
            "nodeId": self.node_id,
            "rooms": len(self._rooms),
            "published": self.published,
            "received": self.received,
            "dropped": self.dropped,
        }

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    # -- internals -------------------------------------------------------------------------

    def _channel(self, room: str) -> bytes:
        return self._prefix + room.encode()

    async def _command(self, pubsub: "PubSub", method: Callable[..., Any], room: str) -> None:
        """SUBSCRIBE or UNSUBSCRIBE on the live connection, concurrently with the listener's
        read: redis-py only writes here, the confirmation arrives through the listener."""
        if self._closed:
            return  # its PubSub is closed or closing: a command would reconnect it
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commands.add(done)
        try:
            await method(self._channel(room))
        except REDIS_ERRORS as error:
            if self._closed:
                return  # the PubSub was closed under it: not a Redis failure
            self._guard.record_failure(error, "broker")
            # The connection is suspect; rebuilding it from self._rooms is the one way back to
            # a known subscription set, whatever state this half-sent command left behind.
            # (Unless the listener has already replaced it while we waited.)
            if self._pubsub is pubsub:
                self._broken = _describe(error)
        finally:
            self._commands.discard(done)
            done.set_result(None)

    async def _listen(self) -> None:
        delay = BROKER_RECONNECT_MIN_SECS
        lost_at: float | None = None
        loop = asyncio.get_running_loop()
        while not self._closed:  # a listener that outlived close() opens nothing more
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            self._open_pubsubs.add(pubsub)
            try:
                await self._subscribe_all(pubsub)
                self._pubsub, self._broken, self._last_error = pubsub, None, None
                self._connected.set()
                self._attempted.set()
                self._guard.record_success("broker")
                if lost_at is not None:
                    log.info("broker re-subscribed %d rooms after %.1f s without Redis",
                             len(self._rooms), loop.time() - lost_at)
                    lost_at = None
                    self._resumed()
                delay = BROKER_RECONNECT_MIN_SECS
                await self._pump(pubsub)
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as error:
                if not self._closed:  # close() took the connection away: not a Redis failure
                    self._last_error = _describe(error)
                    self._guard.record_failure(error, "broker")
            except Exception as error:  # a bug here must not end cross-node delivery for good
                if not self._closed:
                    self._last_error = _describe(error)
                    log.exception("broker listener failed; reconnecting")
            finally:
                self._pubsub = None
                self._connected.clear()
                await self._discard(pubsub)
            if self._closed:
                return  # no reconnect wait: the loop may be gone (a listener finalized after it)
            if lost_at is None:
                lost_at = loop.time()
            self._attempted.set()
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, BROKER_RECONNECT_MAX_SECS)

    async def _subscribe_all(self, pubsub: "PubSub") -> None:
        """Bring a fresh connection to exactly the wanted rooms. Loops because the hub may
        (un)subscribe rooms while we wait on Redis; it only updates self._rooms meanwhile."""
        subscribed: set[str] = set()
        while True:
            wanted = self._rooms | {CONTROL_ROOM}
            missing, stale = wanted - subscribed, subscribed - wanted
            if not missing and not stale:
                return
            if missing:
                await pubsub.subscribe(*(self._channel(room) for room in missing))
                subscribed |= missing
            if stale:
                await pubsub.unsubscribe(*(self._channel(room) for room in stale))
                subscribed -= stale

    async def _pump(self, pubsub: "PubSub") -> None:
        """Deliver messages until the connection fails; always ends by raising."""
        loop = asyncio.get_running_loop()
        last_heard = last_ping = loop.time()
        read = 0
        while True:
            if self._broken:
                raise redis.exceptions.ConnectionError(self._broken)
            message = await pubsub.get_message(ignore_subscribe_messages=True,
                                               timeout=BROKER_POLL_SECS)
            now = loop.time()
            if message is not None:
                last_heard = now  # any frame, PONGs included, proves the connection alive
                if message["type"] == "message":
                    self._dispatch(message["channel"], message["data"])
                read += 1
                if read % MESSAGES_PER_TURN == 0:
                    await asyncio.sleep(0)
            if now - last_heard > BROKER_PING_INTERVAL_SECS + BROKER_PONG_TIMEOUT_SECS:
                raise redis.exceptions.TimeoutError("no reply from Redis on the pub/sub connection")
            if now - last_ping >= BROKER_PING_INTERVAL_SECS:
                await pubsub.ping()
                last_ping = now

    def _resumed(self) -> None:
        if self._on_resumed is not None:
            try:
                self._on_resumed()
            except Exception:
                log.exception("broker resume callback failed")

    def _dispatch(self, channel: bytes | str, data: bytes | str) -> None:
        # A client built with decode_responses=True hands us str; accept it rather than drop.
        channel = channel.encode() if isinstance(channel, str) else channel
        data = data.encode() if isinstance(data, str) else data
        if not channel.startswith(self._prefix):
            return
        room = channel[len(self._prefix):].decode("utf-8", "replace")
        sender, separator, payload = data.partition(WIRE_SEPARATOR)
        if not separator:
            log.debug("ignoring a message without a sender on %s", room)
            return
        if sender + separator == self._sender:
            return
        if room != CONTROL_ROOM and room not in self._rooms:
            return
        self.received += 1
        assert self._on_message is not None  # set by start() before the listener runs
        try:
            self._on_message(room, payload)
        except Exception:
            log.exception("broker callback failed for room %s", room)

    async def _discard(self, pubsub: "PubSub") -> None:
        """Close ``pubsub`` if nobody has yet: the listener and close() may both try."""
        if pubsub not in self._open_pubsubs:
            return
        self._open_pubsubs.discard(pubsub)
        try:
            await pubsub.aclose()
        except Exception:  # already broken; all we want is the socket gone
            log.debug("error closing a pub/sub connection", exc_info=True)


def make_broker(redis: "redis.asyncio.Redis | None", guard: RedisGuard | None) -> Broker:
    """The broker for this process: Redis pub/sub when a client is given, else local only."""
    if redis is None:
        return LocalBroker()
    return RedisBroker(redis, guard or RedisGuard())
