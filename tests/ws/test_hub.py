"""The hub on its own: frames, the direct-send fast path and its ordering, the outbound limit,
broker subscriptions and control messages. Sockets are real (socket pairs under Tornado
IOStreams); the application and the broker are stand-ins, so each case is exact."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from types import SimpleNamespace
from typing import Any

import pytest
import tornado
from tornado.iostream import IOStream

from tests.nodes.test_broker_and_limits import REDIS_URL, needs_redis
from vachat import hub as hub_module
from vachat.hub import CONTROL_ROOM, Hub, build_frame, encode_event
from vachat.testing import eventually, parse_frames


# ---------------------------------------------------------------------------
# helpers, shared with test_ws_protocol
# ---------------------------------------------------------------------------


class FakeBroker:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.published: list[tuple[str, bytes]] = []
        self.on_message: Any = None
        self.gate: asyncio.Event | None = None  # when set, subscribe waits for it
        self.on_resumed: Any = None
        self.down = False  # when set, publish fails (a broker outage)

    async def start(self, on_message: Any, *, on_resumed: Any = None) -> None:
        self.on_message, self.on_resumed = on_message, on_resumed

    async def subscribe(self, room: str) -> None:
        self.calls.append(("subscribe", room))
        if self.gate is not None:
            await self.gate.wait()

    async def unsubscribe(self, room: str) -> None:
        self.calls.append(("unsubscribe", room))

    async def publish(self, room: str, payload: bytes) -> bool:
        if self.down:
            return False
        self.published.append((room, payload))
        return True

    async def publish_control(self, payload: bytes) -> None:
        await self.publish(CONTROL_ROOM, payload)


class FakeConn:
    """What the hub needs of a WebSocketHandler: ``ws_connection`` (stream,
    ``server_terminated``) and ``close(code, reason)``."""

    def __init__(self, stream: IOStream) -> None:
        self.ws_connection = SimpleNamespace(stream=stream, server_terminated=False)
        self.closed_with: tuple[int, str] | None = None

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)
        self.ws_connection.server_terminated = True


def make_hub(outbound_limit: int = 1 << 20) -> Hub:
    config = SimpleNamespace(ws_outbound_limit=outbound_limit, ws_ping_interval=0, ws_ping_timeout=0)  # no pings
    app = SimpleNamespace(config=config, broker=FakeBroker())
    return Hub(app)


def socket_pair(sndbuf: int | None = None) -> tuple[IOStream, socket.socket]:
    server, client = socket.socketpair()
    if sndbuf is not None:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
    client.setblocking(False)
    return IOStream(server), client


def drain(client: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = client.recv(1 << 20)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


async def read_frames(client: socket.socket, count: int, timeout: float = 5.0) -> list[tuple[int, bytes]]:
    """Read from ``client`` until ``count`` complete frames have arrived."""
    data = bytearray()

    async def read() -> list[tuple[int, bytes]]:
        while True:
            data.extend(drain(client))
            frames, _ = parse_frames(data)
            if len(frames) >= count:
                return frames
            await asyncio.sleep(0.001)  # lets the IOLoop flush Tornado's queue

    return await asyncio.wait_for(read(), timeout)


async def attached(hub: Hub, sndbuf: int | None = None) -> tuple[FakeConn, IOStream, socket.socket]:
    stream, client = socket_pair(sndbuf)
    conn = FakeConn(stream)
    hub.attach(conn)
    return conn, stream, client


# ---------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_build_frame_lengths(size: int) -> None:
    payload = b"x" * size
    frames, rest = parse_frames(build_frame(payload))
    assert frames == [(0x1, payload)] and rest == b""


def test_encode_event_shape_and_lone_surrogates() -> None:
    assert json.loads(encode_event("ack", {"a": 1}, "r1")) == {"type": "ack", "data": {"a": 1}, "id": "r1"}
    assert json.loads(encode_event("ready", None)) == {"type": "ready", "data": None}
    text = encode_event("echo", {"text": "\ud800 é"})
    text.decode("utf-8")  # valid UTF-8, whatever the data held
    assert json.loads(text)["data"]["text"] == "\ud800 é"


# ---------------------------------------------------------------------------
# the fast path
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_tornado_internals_are_what_the_fast_path_expects() -> None:
    stream, client = socket_pair()
    try:
        assert hub_module.fast_path_available(stream), f"Tornado {tornado.version} changed IOStream"
        assert hub_module._direct_socket(stream) is stream.socket
    finally:
        stream.close()
        client.close()


@pytest.mark.gen_test
async def test_direct_send_when_nothing_is_queued() -> None:
    hub = make_hub()
    conn, stream, client = await attached(hub)
    await hub.join(conn, "room")
    delivered = await hub.publish("room", "hello", {"n": 1})
    assert delivered == 1
    assert stream._write_buffer._size == 0  # handed to the kernel, nothing queued in Tornado
    frames, _ = parse_frames(drain(client))
    assert [json.loads(p) for _, p in frames] == [{"type": "hello", "data": {"n": 1}}]
    stream.close()
    client.close()


@pytest.mark.gen_test
async def test_frames_queue_behind_tornado_writes_in_order() -> None:
    hub = make_hub(outbound_limit=64 << 20)
    conn, stream, client = await attached(hub, sndbuf=4096)
    await hub.join(conn, "room")
    blob = build_frame(b"B" * 300_000)  # more than the kernel takes: Tornado queues the rest
    stream.write(blob)
    assert stream._write_buffer._size > 0
    for n in range(50):
        await hub.publish("room", "seq", n)
    hub.send(conn, "ack", {"last": True}, id="r1")
    frames = await read_frames(client, 52)
    assert frames[0] == (0x1, b"B" * 300_000)
    events = [json.loads(p) for _, p in frames[1:]]
    assert [e["data"] for e in events[:-1]] == list(range(50))
    assert events[-1] == {"type": "ack", "data": {"last": True}, "id": "r1"}
    stream.close()
    client.close()


@pytest.mark.gen_test
async def test_partial_send_queues_only_the_rest() -> None:
    hub = make_hub(outbound_limit=64 << 20)
    conn, stream, client = await attached(hub, sndbuf=4096)
    await hub.join(conn, "room")
    big = "x" * 500_000
    await hub.publish("room", "big", big)  # the kernel takes part of it, Tornado the rest
    assert 0 < stream._write_buffer._size < len(big)
    frames = await read_frames(client, 1)
    assert json.loads(frames[0][1]) == {"type": "big", "data": big}
    stream.close()
    client.close()


@pytest.mark.gen_test
async def test_slow_consumer_closed_with_4408_not_buffered() -> None:
    limit = 64 * 1024
    hub = make_hub(outbound_limit=limit)
    slow, slow_stream, slow_client = await attached(hub, sndbuf=4096)
    fast, fast_stream, fast_client = await attached(hub)
    await hub.join(slow, "room")
    await hub.join(fast, "room")
    for n in range(200):
        await hub.publish("room", "blob", {"n": n, "pad": "p" * 4000})
        drain(fast_client)
        if slow.closed_with:
            break
    assert slow.closed_with == (4408, "too slow")
    assert slow_stream._write_buffer._size <= limit  # stopped queueing at the limit
    queued = slow_stream._write_buffer._size
    await hub.publish("room", "after", {})
    assert slow_stream._write_buffer._size == queued  # nothing after the close
    assert fast.closed_with is None
    for stream, client in ((slow_stream, slow_client), (fast_stream, fast_client)):
        stream.close()
        client.close()


@pytest.mark.gen_test
async def test_closing_and_closed_sockets_are_skipped() -> None:
    hub = make_hub()
    a, a_stream, a_client = await attached(hub)
    b, b_stream, b_client = await attached(hub)
    for conn in (a, b):
        await hub.join(conn, "room")
    a.ws_connection.server_terminated = True  # a close frame went out: nothing may follow
    b_stream.close()
    assert await hub.publish("room", "x", 1) == 0
    assert drain(a_client) == b""
    a_stream.close()
    a_client.close()
    b_client.close()


@pytest.mark.gen_test
async def test_exclude_skips_one_socket() -> None:
    hub = make_hub()
    a, a_stream, a_client = await attached(hub)
    b, b_stream, b_client = await attached(hub)
    for conn in (a, b):
        await hub.join(conn, "room")
    assert await hub.publish("room", "typing", {}, exclude=a) == 1
    assert drain(a_client) == b""
    assert parse_frames(drain(b_client))[0]
    for stream, client in ((a_stream, a_client), (b_stream, b_client)):
        stream.close()
        client.close()


Member = tuple[FakeConn, IOStream, socket.socket]


async def big_room(monkeypatch: Any) -> tuple[Hub, list[Member], list[list[Any]]]:
    """A hub that hands a frame to four sockets a turn, a room of ten, and where each
    member's events will be kept (see ``received``)."""
    monkeypatch.setattr(hub_module, "SOCKETS_PER_TURN", 4)
    hub = make_hub()
    members = [await attached(hub) for _ in range(10)]
    for conn, _, _ in members:
        await hub.join(conn, "room")
    return hub, members, [[] for _ in members]


def received(members: list[Member], seen: list[list[Any]]) -> int:
    """Read what each member's socket holds into ``seen`` (its events' types, in order);
    how many frames arrived."""
    arrived = 0
    for (_, _, client), events in zip(members, seen):
        frames, _ = parse_frames(drain(client))
        events.extend(json.loads(payload)["type"] for _, payload in frames)
        arrived += len(frames)
    return arrived


def close_all(members: list[Member]) -> None:
    for _, stream, client in members:
        stream.close()
        client.close()


@pytest.mark.gen_test
async def test_a_big_room_is_told_over_several_turns_and_every_socket_keeps_its_order(monkeypatch: Any) -> None:
    hub, members, seen = await big_room(monkeypatch)
    assert hub.publish_local("room", "first", {}) == 10
    assert received(members, seen) == 4  # this turn's share; the rest wait in the outbox
    assert hub.publish_local("room", "second", {}) == 10  # behind the first
    last = members[-1][0]
    assert hub.send(last, "reply", {}, id="r1")  # one socket's reply queues behind both
    assert received(members, seen) == 0
    turns = []
    while sum(map(len, seen)) < 21:
        await asyncio.sleep(0)  # one turn of the loop
        turns.append(received(members, seen))
    assert max(turns) <= 4, turns
    assert seen[:-1] == [["first", "second"]] * 9
    assert seen[-1] == ["first", "second", "reply"]
    assert not hub._outbox
    close_all(members)


@pytest.mark.gen_test
async def test_a_close_hands_out_first_what_was_handed_out_before_it(monkeypatch: Any) -> None:
    hub, members, seen = await big_room(monkeypatch)
    hub.publish_local("room", "goodbye", {})
    last = members[-1][0]
    hub.close(last, 4401, "Session ended")
    assert last.closed_with == (4401, "Session ended")
    assert received(members, seen) == 10  # the whole outbox went out before the close frame
    assert seen == [["goodbye"]] * 10
    hub.publish_local("room", "after", {})
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    received(members, seen)
    assert seen[-1] == ["goodbye"]  # nothing after the close
    assert seen[0] == ["goodbye", "after"]
    close_all(members)


@pytest.mark.gen_test
async def test_an_outbox_past_its_limit_is_handed_out_at_once(monkeypatch: Any) -> None:
    monkeypatch.setattr(hub_module, "OUTBOX_LIMIT", 2)
    hub, members, seen = await big_room(monkeypatch)
    for n in range(2):
        hub.publish_local("room", f"e{n}", {})
    assert received(members, seen) == 4  # two broadcasts wait: within the limit
    hub.publish_local("room", "e2", {})  # a third: past it, everything goes now
    assert received(members, seen) == 26
    assert seen == [["e0", "e1", "e2"]] * 10
    assert not hub._outbox
    close_all(members)


# ---------------------------------------------------------------------------
# rooms, broker, control
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_broker_subscribes_on_first_member_and_unsubscribes_after_last() -> None:
    hub = make_hub()
    await hub.start()
    broker = hub.broker
    a, a_stream, _ = await attached(hub)
    b, b_stream, _ = await attached(hub)
    await hub.join(a, "conversation:1")
    await hub.join(b, "conversation:1")
    assert broker.calls == [("subscribe", "conversation:1")]
    assert hub.room_size("conversation:1") == 2
    hub.leave(a, "conversation:1")
    await asyncio.sleep(0)
    assert broker.calls == [("subscribe", "conversation:1")]
    hub.detach(b)  # a closed socket leaves every room
    for _ in range(3):
        await asyncio.sleep(0)
    assert broker.calls == [("subscribe", "conversation:1"), ("unsubscribe", "conversation:1")]
    assert hub.room_size("conversation:1") == 0
    with pytest.raises(ValueError):
        hub.join(a, CONTROL_ROOM)
    a_stream.close()
    b_stream.close()


@pytest.mark.gen_test
async def test_join_waits_for_the_subscription_and_races_converge() -> None:
    hub = make_hub()
    await hub.start()
    broker = hub.broker
    broker.gate = asyncio.Event()
    a, a_stream, _ = await attached(hub)
    pending = asyncio.ensure_future(hub.join(a, "room"))
    await asyncio.sleep(0.01)
    assert not pending.done()  # not subscribed yet: a remote publication could be missed
    hub.leave(a, "room")  # leave and re-join while the subscribe is in flight
    hub.join(a, "room")
    broker.gate.set()
    await asyncio.wait_for(pending, 1)
    for _ in range(3):
        await asyncio.sleep(0)
    assert broker.calls == [("subscribe", "room")]
    assert hub._subscribed == {"room"} and not hub._syncing
    a_stream.close()


@pytest.mark.gen_test
async def test_remote_publications_are_delivered_locally_once() -> None:
    hub = make_hub()
    await hub.start()
    a, a_stream, a_client = await attached(hub)
    await hub.join(a, "room")
    payload = encode_event("remote", {"from": "node-2"})
    hub.broker.on_message("room", payload)
    hub.broker.on_message("elsewhere", payload)  # no local member: nothing built
    frames, _ = parse_frames(drain(a_client))
    assert frames == [(0x1, payload)]
    # and what we publish goes to the broker as the same JSON text
    await hub.publish("room", "local", 1)
    assert hub.broker.published == [("room", encode_event("local", 1))]
    a_stream.close()
    a_client.close()


@pytest.mark.gen_test
async def test_disconnect_is_local_and_sent_to_other_nodes() -> None:
    hub = make_hub()
    await hub.start()
    conns = {}
    for name, user, session in (("a1", "alice", "s1"), ("a2", "alice", "s2"), ("b", "bob", "s3")):
        conn, stream, _ = await attached(hub)
        hub.identify(conn, user, session)
        conns[name] = conn
    assert await hub.disconnect(session_id="s2", reason="revoked") == 1
    assert conns["a2"].closed_with == (4401, "revoked")
    assert conns["a1"].closed_with is None
    assert await hub.disconnect(user_id="alice") == 1  # a2 is already closing
    assert conns["a1"].closed_with == (4401, "Session ended")
    room, payload = hub.broker.published[-1]
    assert room == CONTROL_ROOM
    assert json.loads(payload) == {"op": "disconnect", "userId": "alice", "sessionId": None,
                                   "code": 4401, "reason": "Session ended"}
    # another node's disconnect of bob
    hub.broker.on_message(CONTROL_ROOM, json.dumps(
        {"op": "disconnect", "userId": "bob", "sessionId": None, "code": 4401, "reason": "disabled"}).encode())
    assert conns["b"].closed_with == (4401, "disabled")
    hub.broker.on_message(CONTROL_ROOM, b"not json")  # ignored, logged
    for conn in conns.values():
        conn.ws_connection.stream.close()


# ---------------------------------------------------------------------------
# two nodes through a real Redis
# ---------------------------------------------------------------------------

@needs_redis
@pytest.mark.gen_test(timeout=15)
async def test_two_nodes_through_redis() -> None:
    from vachat.broker import RedisBroker
    from vachat.redis_client import RedisGuard, make_redis

    nodes, clients, connections = [], [], []
    for _ in range(2):
        hub = make_hub()
        connections.append(make_redis(REDIS_URL))
        hub.app.broker = RedisBroker(connections[-1], RedisGuard(),
                                     channel_prefix=f"test:hub:{os.getpid()}:")
        await hub.start()
        assert await hub.broker.wait_connected(5)
        nodes.append(hub)
    one, two = nodes
    try:
        a, a_stream, a_client = await attached(one)
        b, b_stream, b_client = await attached(two)
        clients += [(a_stream, a_client), (b_stream, b_client)]
        two.identify(b, "bob", "s-b")
        await one.join(a, "conversation:x")
        await two.join(b, "conversation:x")  # awaited: node two's subscription is live

        assert await one.publish("conversation:x", "new-message", {"n": 1}) == 1
        for client in (a_client, b_client):  # once on each node, no echo back to node one
            [(_, payload)] = await read_frames(client, 1)
            assert json.loads(payload) == {"type": "new-message", "data": {"n": 1}}
        await asyncio.sleep(0.2)
        assert drain(a_client) == b""

        await one.disconnect(user_id="bob", reason="disabled elsewhere")
        await eventually(lambda: b.closed_with is not None, 5, "node two to close bob")
        assert b.closed_with == (4401, "disabled elsewhere")
    finally:
        for stream, client in clients:
            stream.close()
            client.close()
        for hub in nodes:
            await hub.broker.close()
        for connection in connections:
            await connection.aclose()


@pytest.mark.gen_test
async def test_held_member_gets_frames_only_on_release_in_order_with_drops() -> None:
    hub = make_hub()
    held, held_stream, held_client = await attached(hub)
    other, _other_stream, other_client = await attached(hub)
    await hub.join(other, "room")
    await hub.join(held, "room", hold=True)
    for n in range(3):
        await hub.publish("room", "tick", {"n": n})
    hub.publish_local("room", "tick", {"n": 3})
    hub.on_remote_message("room", encode_event("tick", {"n": 4}))
    assert [json.loads(p)["data"]["n"] for _, p in await read_frames(other_client, 5)] == [0, 1, 2, 3, 4]
    assert drain(held_client) == b""  # nothing yet
    hub.send(held, "ack", {"first": True}, id="j1")
    assert hub.release(held, "room", drop=lambda kind, data: data["n"] == 1) == 4
    await hub.publish("room", "tick", {"n": 5})
    frames = [json.loads(p) for _, p in await read_frames(held_client, 6)]
    assert frames[0] == {"type": "ack", "data": {"first": True}, "id": "j1"}
    assert [f["data"]["n"] for f in frames[1:]] == [0, 2, 3, 4, 5]
    assert hub.release(held, "room") == 0  # nothing held any more


@pytest.mark.gen_test
async def test_held_frames_past_the_outbound_limit_close_4408() -> None:
    hub = make_hub(outbound_limit=1000)
    held, _stream, _client = await attached(hub)
    await hub.join(held, "room", hold=True)
    for n in range(5):
        await hub.publish("room", "blob", {"pad": "p" * 300})
    assert held.closed_with == (4408, "too slow")


@pytest.mark.gen_test
async def test_release_filter_keeps_dropping_until_it_is_spent() -> None:
    hub = make_hub()
    conn, _stream, client = await attached(hub)
    await hub.join(conn, "room", hold=True)

    def drop(kind: str, data: Any) -> bool | None:
        return True if data["n"] <= 1 else None  # n 2 ends it: nothing at or below 1 follows

    hub.release(conn, "room", drop=drop)
    await hub.publish("room", "tick", {"n": 1})  # dropped
    await hub.publish("room", "tick", {"n": 2})  # delivered, and the filter is spent
    await hub.publish("room", "tick", {"n": 1})
    assert [json.loads(p)["data"]["n"] for _, p in await read_frames(client, 2)] == [2, 1]
    assert hub._filters == {} and hub._holds == {}


async def sequenced_hub(store: list[tuple[int, str, Any]]) -> Hub:
    """A started hub whose ``seq:`` rooms read their missed changes from ``store`` (as a
    database would)."""
    hub = make_hub()

    async def read_after(room: str, after: int) -> tuple[list[tuple[int, str, Any]], int]:
        frames = [frame for frame in store if frame[0] > after]
        return frames, max([after] + [frame[0] for frame in store])

    hub.sequence_rooms("seq:", read_after)
    await hub.start()
    return hub


def change(seq: int) -> tuple[int, str, dict[str, Any]]:
    return seq, "new-message", {"id": f"m{seq}", "seq": seq}


async def seqs_read(client: Any, count: int) -> list[int]:
    return [json.loads(p)["data"]["seq"] for _, p in await read_frames(client, count)]


@pytest.mark.gen_test
async def test_sequenced_room_delivers_each_change_once_in_order_past_the_snapshot() -> None:
    store = [change(n) for n in range(1, 4)]
    hub = await sequenced_hub(store)
    first, _s1, first_client = await attached(hub)
    second, _s2, second_client = await attached(hub)
    await hub.join(first, "seq:c", hold=True)
    await hub.join(second, "seq:c", hold=True)
    hub.on_remote_message("seq:c", encode_event(*change(4)[1:]))  # before anyone knows where the room stands
    hub.release(first, "seq:c", seq=3)  # its snapshot covers 1..3
    for seq in (6, 5, 4, 5):  # another node's 6 before 5; repeats of 4 and 5
        hub.on_remote_message("seq:c", encode_event(*change(seq)[1:]))
    assert await seqs_read(first_client, 3) == [4, 5, 6]
    hub.release(second, "seq:c", seq=5)  # a later snapshot: only 6 is new to it
    await hub.publish("seq:c", "new-message", {"id": "m7", "seq": 7})
    assert await seqs_read(second_client, 2) == [6, 7]
    assert await seqs_read(first_client, 1) == [7]
    assert drain(first_client) == b"" and drain(second_client) == b""


@pytest.mark.gen_test
async def test_sequenced_room_reads_back_a_missing_change_and_what_an_outage_lost() -> None:
    store = [change(1)]
    hub = await sequenced_hub(store)
    conn, _stream, client = await attached(hub)
    await hub.join(conn, "seq:c", hold=True)
    hub.release(conn, "seq:c", seq=1)
    store.extend([change(2), change(3)])
    hub.on_remote_message("seq:c", encode_event(*change(3)[1:]))  # 2's publication was lost
    assert await seqs_read(client, 2) == [2, 3]  # read back after GAP_WAIT_SECS
    store.extend([change(4), change(5)])  # published while the broker was down: never arrive
    hub.broker.on_resumed()
    assert await seqs_read(client, 2) == [4, 5]
    assert drain(client) == b""
    assert hub._orders["seq:c"].last == 5


@pytest.mark.gen_test
async def test_a_node_whose_publications_were_lost_asks_the_others_to_read_back() -> None:
    hub = await sequenced_hub([])
    conn, _stream, _client = await attached(hub)
    await hub.join(conn, "seq:c", hold=True)
    hub.release(conn, "seq:c", seq=0)
    hub.broker.down = True
    await hub.publish("seq:c", "new-message", {"seq": 1})
    await hub.publish("seq:other", "new-message", {"seq": 1})  # joined elsewhere only: read back there too
    await hub.publish("room", "tick", {})  # not sequenced: nothing to read back
    hub.broker.down = False
    hub.broker.on_resumed()
    await eventually(lambda: any(room == CONTROL_ROOM for room, _ in hub.broker.published))
    control = [json.loads(p) for room, p in hub.broker.published if room == CONTROL_ROOM]
    assert control == [{"op": "resync", "rooms": ["seq:c", "seq:other"]}]


@pytest.mark.gen_test
async def test_a_sequenced_room_joined_without_a_snapshot_starts_at_the_first_change() -> None:
    hub = await sequenced_hub([])
    conn, _stream, client = await attached(hub)
    await hub.join(conn, "seq:c")  # no hold, no snapshot: nothing says where the room stands
    for seq in (7, 8, 8):
        hub.on_remote_message("seq:c", encode_event(*change(seq)[1:]))
    assert await seqs_read(client, 2) == [7, 8]
    assert drain(client) == b""
