"""The broker, the rate limiters and the Redis guard, against a real Redis.

Redis comes from ``VACHAT_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``). Every test
uses its own keys, rooms and client names, and kills only its own connections, so the suite can
share a Redis with other runs. Outages are simulated with a TCP proxy the test stops and
restarts, and with ``CLIENT KILL`` on the broker's own pub/sub connection.

Nothing here asserts after a fixed sleep: tests wait on callbacks, events or a polled condition
with a deadline; in-memory time is moved with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import uuid
import warnings
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from redis.asyncio.client import PubSub

import vachat.broker
from vachat.broker import CONTROL_ROOM, MESSAGES_PER_TURN, WIRE_SEPARATOR, LocalBroker, RedisBroker, make_broker
from vachat.config import Rate
from vachat.ratelimit import (
    REDIS_KEY_PREFIX, MemoryRateLimiter, RateDecision, RedisRateLimiter, make_rate_limiter,
)
from vachat.redis_client import RedisGuard, make_redis
from vachat.testing import eventually, needs_redis

REDIS_URL = os.environ.get("VACHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
UNREACHABLE_URL = "redis://127.0.0.1:1/15"  # port 1: connection refused at once


def _redis_reachable() -> bool:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()




def unique(prefix: str) -> str:
    return f"test:{prefix}:{uuid.uuid4().hex}"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds




class Inbox:
    """A broker callback that records (room, payload) and lets a test wait for a delivery."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()

    def __call__(self, room: str, payload: bytes) -> None:
        self.items.append((room, payload))
        self._changed.set()

    async def wait_for(self, room: str, payload: bytes, timeout: float) -> None:
        async def arrived() -> None:
            while (room, payload) not in self.items:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(arrived(), timeout)

    def payloads(self, room: str) -> list[bytes]:
        return [payload for got_room, payload in self.items if got_room == room]


class TcpProxy:
    """Forwards 127.0.0.1:<port> to Redis until stopped; restartable on the same port."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self._target_url = parts
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        parts = self._target_url
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@" if credentials else ""
        return urlunsplit((parts.scheme, f"{netloc}127.0.0.1:{self.port}", parts.path,
                           parts.query, parts.fragment))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and cut every open one, as a crashed Redis would."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if self._tasks:  # let the forwarding tasks see the abort and finish
            await asyncio.wait(self._tasks, timeout=5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)


async def open_client(stack: contextlib.AsyncExitStack, url: str = REDIS_URL,
                      **kwargs: Any) -> "redis.asyncio.Redis":
    client = make_redis(url, **kwargs)
    stack.push_async_callback(client.aclose)
    return client


async def open_broker(stack: contextlib.AsyncExitStack, url: str = REDIS_URL,
                      guard: RedisGuard | None = None, client_name: str = "vachat-test",
                      pubsub_class: type[PubSub] | None = None) -> tuple[RedisBroker, Inbox]:
    client = await open_client(stack, url, client_name=client_name)
    if pubsub_class is not None:  # a PubSub that misbehaves as the test needs
        client.pubsub = lambda **kwargs: pubsub_class(client.connection_pool, **kwargs)  # type: ignore[method-assign]
    broker = RedisBroker(client, guard or RedisGuard())
    inbox = Inbox()
    await broker.start(inbox)
    stack.push_async_callback(broker.close)
    return broker, inbox


# ---------------------------------------------------------------------------
# RedisGuard
# ---------------------------------------------------------------------------

def test_guard_logs_once_per_transition_and_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    guard = RedisGuard(backoff=2.0, clock=clock)
    assert guard.available and guard.should_try()
    assert guard.status() == {"status": "ok", "error": None}

    caplog.set_level(logging.INFO, logger="vachat.redis")
    for _ in range(5):
        guard.record_failure(ConnectionError("refused"), "test")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "refused" in warnings[0].getMessage()
    assert guard.status() == {"status": "down", "error": "ConnectionError: refused"}

    assert not guard.should_try()  # inside the back-off window
    clock.advance(2.0)
    assert guard.should_try()  # one probe...
    assert not guard.should_try()  # ...and only one per window
    guard.record_success()
    guard.record_success()
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1
    assert guard.available and guard.last_error is None and guard.should_try()


# ---------------------------------------------------------------------------
# MemoryRateLimiter
# ---------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_memory_limiter_burst_then_sustained_rate() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    rate = Rate(3, 3.0)  # burst of 3, then one per second

    decisions = [await limiter.hit("k", rate) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, True]
    assert [d.remaining for d in decisions] == [2, 1, 0]
    assert all(d.limit == 3 and d.retry_after == 0 for d in decisions)

    refused = await limiter.hit("k", rate)
    assert refused == RateDecision(False, 3, 0, pytest.approx(1.0))
    clock.advance(0.5)
    assert (await limiter.hit("k", rate)).retry_after == pytest.approx(0.5)  # refusals not counted

    clock.advance(0.5)
    assert (await limiter.hit("k", rate)).allowed
    assert not (await limiter.hit("k", rate)).allowed
    assert (await limiter.hit("other", rate)).allowed  # keys are independent


@pytest.mark.gen_test
async def test_memory_limiter_has_no_window_edge_double_burst() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    rate = Rate(10, 10.0)
    clock.advance(9.99)  # a fixed window would reset just after this burst
    assert all([(await limiter.hit("edge", rate)).allowed for _ in range(10)])
    clock.advance(0.02)
    allowed = [(await limiter.hit("edge", rate)).allowed for _ in range(10)]
    assert allowed.count(True) == 0  # not another 10: one a second from here on


@pytest.mark.gen_test
async def test_memory_limiter_reset() -> None:
    limiter = MemoryRateLimiter(clock=FakeClock())
    rate = Rate(1, 60)
    assert (await limiter.hit("k", rate)).allowed
    assert not (await limiter.hit("k", rate)).allowed
    await limiter.reset("k")
    assert (await limiter.hit("k", rate)) == RateDecision(True, 1, 0, 0.0)


@pytest.mark.gen_test
async def test_memory_limiter_prunes_expired_keys() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    for index in range(200):
        await limiter.hit(f"ip:{index}", Rate(5, 1.0))
    assert len(limiter) == 200
    clock.advance(1.0)  # every bucket is full again, i.e. indistinguishable from absent
    for _ in range(10):
        await limiter.hit("live", Rate(5, 1.0))
    assert len(limiter) == 1


@pytest.mark.gen_test
async def test_memory_limiter_caps_keys(caplog: pytest.LogCaptureFixture) -> None:
    limiter = MemoryRateLimiter(max_keys=50, clock=FakeClock())
    for index in range(500):
        await limiter.hit(f"flood:{index}", Rate(1, 3600))
    assert len(limiter) == 50
    assert len([r for r in caplog.records if r.name == "vachat.ratelimit"]) == 1
    # The survivors are the most recent keys, still limited.
    assert not (await limiter.hit("flood:499", Rate(1, 3600))).allowed


@pytest.mark.gen_test
async def test_factories_without_redis() -> None:
    assert isinstance(make_rate_limiter(None, None), MemoryRateLimiter)
    broker = make_broker(None, None)
    assert isinstance(broker, LocalBroker)
    await broker.start(Inbox())
    await broker.subscribe("room")
    await broker.publish("room", b"x")
    assert broker.status()["status"] == "disabled"
    await broker.close()


# ---------------------------------------------------------------------------
# RedisRateLimiter
# ---------------------------------------------------------------------------

@needs_redis
@pytest.mark.gen_test(timeout=15)
async def test_redis_limiter_enforces_shared_limit() -> None:
    async with contextlib.AsyncExitStack() as stack:
        client = await open_client(stack)
        node_a = make_rate_limiter(client, RedisGuard())
        node_b = RedisRateLimiter(await open_client(stack), RedisGuard())  # a second node
        assert isinstance(node_a, RedisRateLimiter)
        key, rate = unique("rl"), Rate(4, 20.0)

        decisions = [await node.hit(key, rate) for node in (node_a, node_b, node_a, node_b)]
        assert [d.allowed for d in decisions] == [True] * 4
        assert [d.remaining for d in decisions] == [3, 2, 1, 0]
        refused = await node_a.hit(key, rate)
        assert not refused.allowed and refused.remaining == 0
        assert 4.0 < refused.retry_after <= 5.0  # one per 5 s; a few ms have passed

        ttl = await client.pttl(REDIS_KEY_PREFIX + key)
        assert 0 < ttl <= 20_000  # the key expires once the bucket would be full again

        await node_b.reset(key)
        assert not await client.exists(REDIS_KEY_PREFIX + key)
        assert (await node_a.hit(key, rate)).remaining == 3
        await client.delete(REDIS_KEY_PREFIX + key)


@needs_redis
@pytest.mark.gen_test(timeout=15)
async def test_redis_limiter_no_window_edge_double_burst() -> None:
    async with contextlib.AsyncExitStack() as stack:
        client = await open_client(stack)
        limiter = RedisRateLimiter(client, RedisGuard())
        key = unique("edge")
        allowed = [(await limiter.hit(key, Rate(5, 30.0))).allowed for _ in range(10)]
        assert allowed == [True] * 5 + [False] * 5
        await client.delete(REDIS_KEY_PREFIX + key)


@pytest.mark.gen_test(timeout=15)
async def test_redis_limiter_degrades_to_memory_when_unreachable(
        caplog: pytest.LogCaptureFixture) -> None:
    async with contextlib.AsyncExitStack() as stack:
        guard = RedisGuard()
        limiter = RedisRateLimiter(await open_client(stack, UNREACHABLE_URL), guard)
        rate = Rate(2, 60)
        decisions = [await limiter.hit("k", rate) for _ in range(3)]  # never raises
        assert [d.allowed for d in decisions] == [True, True, False]  # still enforced, locally
        assert guard.status()["status"] == "down" and "111" in guard.status()["error"]
        await limiter.reset("k")
        assert (await limiter.hit("k", rate)).allowed
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1  # one warning for the outage, not one per call
        await limiter.close()


@needs_redis
@pytest.mark.gen_test(timeout=20)
async def test_redis_limiter_returns_to_redis_after_outage(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vachat.redis")
    proxy = TcpProxy(REDIS_URL)
    await proxy.start()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(proxy.stop)
        direct = await open_client(stack)
        clock = FakeClock()
        guard = RedisGuard(backoff=2.0, clock=clock)
        limiter = RedisRateLimiter(await open_client(stack, proxy.url), guard)
        key, rate = unique("outage"), Rate(3, 60)

        assert (await limiter.hit(key, rate)).remaining == 2
        assert await direct.exists(REDIS_KEY_PREFIX + key)

        await proxy.stop()
        assert (await limiter.hit(key, rate)).remaining == 2  # a fresh bucket in memory
        assert not guard.available
        await proxy.start()
        assert (await limiter.hit(key, rate)).remaining == 1  # still memory: backing off

        clock.advance(2.0)
        assert (await limiter.hit(key, rate)).remaining == 1  # back to Redis's bucket
        assert guard.available
        redis_logs = [r.levelname for r in caplog.records if r.name == "vachat.redis"]
        assert redis_logs == ["WARNING", "INFO"]
        await direct.delete(REDIS_KEY_PREFIX + key)


# ---------------------------------------------------------------------------
# RedisBroker
# ---------------------------------------------------------------------------

@needs_redis
@pytest.mark.gen_test(timeout=15)
async def test_brokers_deliver_each_others_publications_not_their_own() -> None:
    async with contextlib.AsyncExitStack() as stack:
        node_a, inbox_a = await open_broker(stack)
        node_b, inbox_b = await open_broker(stack)
        assert node_a.node_id != node_b.node_id
        assert node_a.status()["status"] == "ok"
        room = unique("room")
        await node_a.subscribe(room)
        await node_b.subscribe(room)

        await node_a.publish(room, b"from-a")
        await inbox_b.wait_for(room, b"from-a", timeout=5)
        await node_b.publish(room, b"from-b")
        await inbox_a.wait_for(room, b"from-b", timeout=5)
        # Redis delivers in publish order, so had A received its own message it would already
        # be here, ahead of B's.
        assert inbox_a.payloads(room) == [b"from-b"]
        assert inbox_b.payloads(room) == [b"from-a"]


@needs_redis
@pytest.mark.gen_test(timeout=15)
async def test_a_burst_of_publications_is_delivered_a_turn_of_the_loop_at_a_time() -> None:
    """Messages Redis sent together are read from a buffer without waiting: the listener
    hands the loop back every MESSAGES_PER_TURN, so a burst does not hold this node's sockets."""
    async with contextlib.AsyncExitStack() as stack:
        node, inbox = await open_broker(stack)
        room = unique("burst")
        await node.subscribe(room)
        burst = 8 * MESSAGES_PER_TURN
        publisher = await open_client(stack)
        async with publisher.pipeline(transaction=False) as pipe:  # one write: they arrive together
            for n in range(burst):
                pipe.publish(node._channel(room), b"another-node" + WIRE_SEPARATOR + str(n).encode())
            await pipe.execute()
        seen = [len(inbox.items)]  # messages delivered so far, at each of the loop's turns
        while seen[-1] < burst:
            await asyncio.sleep(0)
            seen.append(len(inbox.items))
        assert inbox.payloads(room) == [str(n).encode() for n in range(burst)]
        steps = [after - before for before, after in zip(seen, seen[1:])]
        assert max(steps) <= MESSAGES_PER_TURN, steps


@needs_redis
@pytest.mark.gen_test(timeout=15)
async def test_unsubscribe_stops_delivery() -> None:
    async with contextlib.AsyncExitStack() as stack:
        node_a, _ = await open_broker(stack)
        node_b, inbox_b = await open_broker(stack)
        left, kept = unique("left"), unique("kept")
        await node_b.subscribe(left)
        await node_b.subscribe(kept)
        await node_a.publish(left, b"1")
        await inbox_b.wait_for(left, b"1", timeout=5)

        await node_b.unsubscribe(left)
        await node_a.publish(left, b"2")
        await node_a.publish(kept, b"marker")
        await inbox_b.wait_for(kept, b"marker", timeout=5)  # published after "2", so "2" is past
        assert inbox_b.payloads(left) == [b"1"]
        assert node_b.status()["rooms"] == 1


@needs_redis
@pytest.mark.gen_test(timeout=15)
async def test_control_room_reaches_every_node() -> None:
    async with contextlib.AsyncExitStack() as stack:
        node_a, inbox_a = await open_broker(stack)
        node_b, inbox_b = await open_broker(stack)
        message = unique("close-user").encode()
        await node_a.publish_control(message)
        await inbox_b.wait_for(CONTROL_ROOM, message, timeout=5)
        await node_b.unsubscribe(CONTROL_ROOM)  # ignored: the control room is not optional
        await node_b.publish_control(b"reply")
        await inbox_a.wait_for(CONTROL_ROOM, b"reply", timeout=5)
        assert inbox_a.payloads(CONTROL_ROOM) == [b"reply"]


@pytest.mark.gen_test(timeout=15)
async def test_broker_without_redis_degrades_and_never_raises(
        caplog: pytest.LogCaptureFixture) -> None:
    async with contextlib.AsyncExitStack() as stack:
        guard = RedisGuard()
        broker, _ = await open_broker(stack, UNREACHABLE_URL, guard)  # start() returns
        await broker.subscribe("room")
        for _ in range(3):
            await broker.publish("room", b"lost")
        status = broker.status()
        assert status["status"] == "down" and status["error"]
        assert status["dropped"] == 3 and status["published"] == 0
        assert guard.status()["status"] == "down"
        assert not await broker.wait_connected(0.1)
        assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


@needs_redis
@pytest.mark.gen_test(timeout=30)
async def test_broker_resubscribes_after_its_connection_is_killed() -> None:
    async with contextlib.AsyncExitStack() as stack:
        name = f"vachat-test-{uuid.uuid4().hex[:12]}"
        node_a, inbox_a = await open_broker(stack, client_name=name)
        node_b, _ = await open_broker(stack)
        admin = await open_client(stack)
        room = unique("killed")
        await node_a.subscribe(room)

        # What CLIENT KILL TYPE pubsub does, limited to node A's connection so that other
        # runs sharing this Redis are left alone.
        clients = await admin.client_list(_type="pubsub")
        ours = [c["id"] for c in clients if c.get("name") == name]
        assert len(ours) == 1
        assert await admin.execute_command("CLIENT", "KILL", "ID", ours[0])

        await _publish_until_received(node_b, inbox_a, room, timeout=20)
        assert node_a.status()["status"] == "ok"


@needs_redis
@pytest.mark.gen_test(timeout=40)
async def test_broker_survives_redis_outage_and_recovers(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vachat")
    proxy = TcpProxy(REDIS_URL)
    await proxy.start()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(proxy.stop)
        guard_a = RedisGuard()
        node_a, inbox_a = await open_broker(stack, proxy.url, guard_a)
        node_b, inbox_b = await open_broker(stack)
        room = unique("outage")
        await node_a.subscribe(room)
        await node_b.subscribe(room)
        await node_b.publish(room, b"before")
        await inbox_a.wait_for(room, b"before", timeout=5)

        await proxy.stop()
        await eventually(lambda: node_a.status()["status"] == "down", 15, "node A to notice")
        assert not guard_a.available
        await node_a.publish(room, b"during")  # dropped, not raised
        late_room = unique("joined-during-outage")
        await node_a.subscribe(late_room)  # remembered for the reconnect

        await proxy.start()
        assert await node_a.wait_connected(15)
        assert guard_a.available and node_a.status()["status"] == "ok"
        await _publish_until_received(node_b, inbox_a, room, timeout=10)
        await _publish_until_received(node_b, inbox_a, late_room, timeout=10)
        await node_a.publish(room, b"after")
        await inbox_b.wait_for(room, b"after", timeout=5)

        redis_logs = [r.levelname for r in caplog.records if r.name == "vachat.redis"]
        assert redis_logs == ["WARNING", "INFO"]  # once down, once back: not per call


class SlowToUnwind(PubSub):
    """A PubSub whose read, once cancelled, takes ``unwind`` seconds to give up, whatever
    more cancellations come: a listener that does not unwind within the time ``close()``
    waits for it."""

    unwind = 0.5

    async def get_message(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_message(*args, **kwargs)
        except asyncio.CancelledError:
            loop = asyncio.get_running_loop()
            end = loop.time() + self.unwind
            while loop.time() < end:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(end - loop.time())
            raise


class SwallowsOneCancel(PubSub):
    """A PubSub whose read answers "no message" to the first cancellation, as redis-py's does
    when the cancellation lands as its read timeout expires."""

    swallowed = False

    async def get_message(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_message(*args, **kwargs)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed = True
            return None


@needs_redis
@pytest.mark.gen_test
async def test_close_cancels_again_a_listener_that_swallowed_the_cancellation() -> None:
    async with contextlib.AsyncExitStack() as stack:
        broker, _ = await open_broker(stack, pubsub_class=SwallowsOneCancel)
        assert await broker.wait_connected(5)
        pubsub, listener = broker._pubsub, broker._task
        assert isinstance(pubsub, SwallowsOneCancel) and listener is not None
        await broker.close()
        assert pubsub.swallowed and listener.done()


@needs_redis
def test_close_closes_the_pub_sub_of_a_listener_that_does_not_unwind_in_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A loop of its own, closed at the end as a test's loop is at teardown. close() gives up on
    # the listener before it unwinds; the listener's PubSub must be closed all the same, while
    # the loop runs (left to the listener, it could be closed only after the loop had ended:
    # aclose() then cannot schedule its teardown, "never awaited", and the connection leaks).
    # The listener is then let finish, so that nothing of this test is finalized later, inside
    # another test.
    monkeypatch.setattr(vachat.broker, "BROKER_CLOSE_TIMEOUT_SECS", SlowToUnwind.unwind / 5)

    async def close_while_the_listener_reads() -> tuple[PubSub, bool]:
        async with contextlib.AsyncExitStack() as stack:
            broker, _ = await open_broker(stack, pubsub_class=SlowToUnwind)
            assert await broker.wait_connected(5)
            pubsub, listener = broker._pubsub, broker._task
            assert isinstance(pubsub, SlowToUnwind) and pubsub.connection is not None and listener is not None
            await broker.close()
            closed_by_close = pubsub.connection is None and not listener.done()
            await asyncio.wait({listener}, timeout=10 * SlowToUnwind.unwind)
            assert listener.done()
            return pubsub, closed_by_close

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # as Tornado's IOLoop does for the test's loop
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pubsub, closed_by_close = loop.run_until_complete(close_while_the_listener_reads())
        finally:
            loop.close()
            asyncio.set_event_loop(None)
        gc.collect()
    assert closed_by_close, "close() returned with the listener's PubSub still open"
    assert pubsub.connection is None
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


class SlowToSubscribe(PubSub):
    """A PubSub whose SUBSCRIBE, once it has subscribed anything, takes ``delay`` seconds to
    go out (a slow socket): the hub's subscribe of a room stays in flight that long."""

    delay = 0.3

    async def subscribe(self, *args: Any, **kwargs: Any) -> Any:
        if self.subscribed:
            await asyncio.sleep(self.delay)
        return await super().subscribe(*args, **kwargs)


@needs_redis
@pytest.mark.gen_test(timeout=15)
async def test_close_lets_a_subscribe_in_flight_finish_before_it_closes_the_pub_sub() -> None:
    async with contextlib.AsyncExitStack() as stack:
        name = f"vachat-test-{uuid.uuid4().hex[:12]}"
        broker, _ = await open_broker(stack, client_name=name, pubsub_class=SlowToSubscribe)
        admin = await open_client(stack)
        assert await broker.wait_connected(5)
        pubsub = broker._pubsub
        assert isinstance(pubsub, SlowToSubscribe)

        subscribing = asyncio.ensure_future(broker.subscribe(unique("room")))
        await asyncio.sleep(0)  # the SUBSCRIBE is under way
        await broker.close()
        await subscribing
        # Closed under the command, the PubSub would have taken a new connection for it.
        assert pubsub.connection is None
        assert [c for c in await admin.client_list(_type="pubsub") if c.get("name") == name] == []


async def _publish_until_received(sender: RedisBroker, inbox: Inbox, room: str,
                                  timeout: float) -> None:
    """Publish until the receiver gets one: until it has re-subscribed, messages are lost."""
    attempts = itertools.count(1)

    async def delivered() -> bool:
        payload = f"probe-{next(attempts)}".encode()
        await sender.publish(room, payload)
        try:
            await inbox.wait_for(room, payload, timeout=0.2)
            return True
        except asyncio.TimeoutError:
            return False

    await eventually(delivered, timeout, f"a delivery on {room}", interval=0)
