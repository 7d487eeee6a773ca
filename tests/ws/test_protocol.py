"""The WebSocket protocol of SPEC §5 through the real server: authentication, origins, frame
errors, replies, rate limits, oversize frames, slow consumers, rooms and disconnects.

This module is also the test plugin ``wstest`` (its hook implementations below add events).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import struct
import sys
import weakref
from typing import Any

import pytest

from vachat import hub as hub_module
from vachat.hub import CONTROL_ROOM, encode_event
from vachat.testing import client_frame, eventually, parse_frames, raw_upgrade
from vachat.plugin_api import NotFound, hookimpl, ws_event

pytestmark = pytest.mark.vachat(plugins=[("wstest", sys.modules[__name__])])

ECHO_SCHEMA = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string", "maxLength": 100}},
    "additionalProperties": False,
}


# ---------------------------------------------------------------------------
# the test plugin
# ---------------------------------------------------------------------------


@ws_event("echo", schema="wstest/echo")
async def echo(ctx, data):
    return {"text": data["text"], "by": ctx.actor.id}


@ws_event("secret", permission="wstest.secret")
async def secret(ctx, data):
    return {"ok": True}


@ws_event("limited", rate="2/60s")
async def limited(ctx, data):
    return {"ok": True}


@ws_event("join")
async def join(ctx, data):
    await ctx.join(data["room"])
    return {"room": data["room"]}


@ws_event("leave")
async def leave(ctx, data):
    ctx.leave(data["room"])
    return {"room": data["room"]}


@ws_event("shout")
async def shout(ctx, data):
    return {"delivered": await ctx.publish(data["room"], "shout", {"text": data["text"], "from": ctx.actor.id},
                                           exclude_self=True)}


@ws_event("fail")
async def fail(ctx, data):
    if data.get("kind") == "api":
        raise NotFound("No such thing")
    raise RuntimeError("boom")


@hookimpl
def vachat_ws_events(app):
    app.schemas.add("wstest/echo", dict(ECHO_SCHEMA))
    return [echo, secret, limited, join, leave, shout, fail]


@hookimpl
def vachat_permissions():
    return [("wstest.secret", "Call the secret test event")]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def as_user(user: str, session: str | None = None, permissions: str | None = None) -> dict[str, str]:
    """Upgrade headers authenticating ``user`` through the test auth plugin's bearer tokens."""
    headers = {"Authorization": f"Bearer test:{user}"}
    if session:
        headers["X-Test-Session"] = session
    if permissions:
        headers["X-Test-Permissions"] = permissions
    return headers


async def connect(ws_connect, user: str, **kwargs: Any):
    client = await ws_connect(headers=as_user(user, **kwargs))
    ready = await client.receive("ready")
    assert ready["data"]["userId"] == user
    return client


async def assert_open(client) -> None:
    """The socket still answers (and, frames being ordered, nothing else was pending)."""
    reply = await client.request("ping")
    assert reply["type"] == "pong"


# ---------------------------------------------------------------------------
# authentication and origin
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_auth_by_header_gets_ready_and_joins_user_room(app, ws_connect):
    client = await ws_connect(headers=as_user("alice", session="s-1"))
    ready = await client.receive("ready")
    assert ready == {"type": "ready", "data": {"userId": "alice", "sessionId": "s-1", "protocol": 1}}
    assert app.hub.room_size("user:alice") == 1
    await assert_open(client)
    assert app.metrics.value("vachat_ws_connections") == 1


@pytest.mark.gen_test
async def test_auth_by_first_frame(app, ws_connect):
    client = await ws_connect()
    reply = await client.request("auth", {"token": "test:bob"})
    assert reply == {"type": "ack", "data": {"userId": "bob", "sessionId": "session-bob"}, "id": "r1"}
    ready = await client.receive("ready")  # sent before the ack; both arrived
    assert ready["data"] == {"userId": "bob", "sessionId": "session-bob", "protocol": 1}
    assert app.hub.room_size("user:bob") == 1
    echoed = await client.request("echo", {"text": "hi"})
    assert echoed["data"] == {"text": "hi", "by": "bob"}
    again = await client.request("auth", {"token": "test:bob"})
    assert again["type"] == "error" and again["data"]["code"] == "VALIDATION_FAILED"
    await assert_open(client)


@pytest.mark.gen_test
@pytest.mark.vachat(config={"ws_auth_timeout": 0.2})
async def test_auth_timeout_closes_4401(ws_connect):
    client = await ws_connect()
    code, reason = await client.closed()
    assert code == 4401 and "timed out" in reason


@pytest.mark.gen_test
async def test_anything_before_auth_closes_4401(app, ws_connect):
    client = await ws_connect()
    client.send("echo", {"text": "hi"}, id="e1")
    error = await client.receive("error")
    assert error["id"] == "e1" and error["data"]["code"] == "UNAUTHORIZED"
    assert (await client.closed())[0] == 4401

    garbage = await ws_connect()
    garbage.send_raw("{not json")
    assert (await garbage.closed())[0] == 4401


@pytest.mark.gen_test
async def test_bad_tokens_close_4401(ws_connect):
    by_frame = await ws_connect()
    by_frame.send("auth", {"token": "test:invalid"}, id="a1")
    error = await by_frame.receive("error")
    assert error == {"type": "error", "data": {"code": "UNAUTHORIZED", "message": "Invalid test credentials"},
                     "id": "a1"}
    assert (await by_frame.closed()) == (4401, "Invalid test credentials")

    unknown = await ws_connect()
    unknown.send("auth", {"token": "not-a-token-anyone-knows"})
    assert (await unknown.closed())[0] == 4401

    missing = await ws_connect()
    missing.send("auth", {})
    assert (await missing.closed())[0] == 4401

    by_header = await ws_connect(headers=as_user("invalid"))
    assert (await by_header.closed())[0] == 4401


@pytest.mark.gen_test
@pytest.mark.vachat(config={"cors_origins": ["https://app.example"]})
async def test_refused_origin_closes_4403(app, ws_connect):
    refused = await ws_connect(headers={**as_user("alice"), "Origin": "https://evil.example"})
    assert (await refused.closed()) == (4403, "Origin not allowed")
    assert app.hub.room_size("user:alice") == 0

    allowed = await ws_connect(headers={**as_user("alice"), "Origin": "https://app.example"})
    assert (await allowed.receive("ready"))["data"]["userId"] == "alice"
    no_origin = await connect(ws_connect, "bob")  # not a browser: nothing to check
    await assert_open(no_origin)


# ---------------------------------------------------------------------------
# frames and replies
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_bad_frames_get_errors_and_the_socket_stays_open(ws_connect):
    client = await connect(ws_connect, "alice")

    client.send_raw("{not json")
    error = await client.receive("error")
    assert "id" not in error and error["data"]["code"] == "VALIDATION_FAILED"

    client.send_raw("[1, 2]")
    assert (await client.receive("error"))["data"]["code"] == "VALIDATION_FAILED"

    client.send_raw(json.dumps({"id": "t1", "data": {}}))
    missing_type = await client.receive("error", id="t1")
    assert missing_type["data"]["code"] == "VALIDATION_FAILED"
    assert missing_type["data"]["details"] == [{"field": "type", "message": "is required"}]

    client.send_raw(b"\x00binary")
    assert (await client.receive("error"))["data"]["code"] == "VALIDATION_FAILED"

    unknown = await client.request("no-such-event", {})
    assert unknown["type"] == "error" and unknown["data"]["code"] == "UNKNOWN_EVENT"

    invalid = await client.request("echo", {"text": 5, "extra": True})
    assert invalid["type"] == "error" and invalid["data"]["code"] == "VALIDATION_FAILED"
    assert {d["field"] for d in invalid["data"]["details"]} == {"text", "extra"}

    absent = await client.request("echo")  # no data: validated as {}
    assert absent["data"]["details"] == [{"field": "text", "message": "is required"}]

    forbidden = await client.request("secret")
    assert forbidden["type"] == "error" and forbidden["data"]["code"] == "FORBIDDEN"

    await assert_open(client)
    assert client.frames == []  # exactly one reply each, nothing else


@pytest.mark.gen_test
async def test_permission_granted(ws_connect):
    client = await connect(ws_connect, "admin", permissions="wstest.secret")
    assert (await client.request("secret"))["data"] == {"ok": True}


@pytest.mark.gen_test
async def test_each_id_gets_exactly_one_reply(ws_connect):
    client = await connect(ws_connect, "alice")
    for frame_id in ("a", 7):
        client.send("echo", {"text": str(frame_id)}, id=frame_id)
    client.send("echo", {"text": "no id"})  # success without id: no ack at all
    client.send("echo", {"text": 1})  # failure without id: an error, without id
    first = await client.receive(id="a")
    second = await client.receive(id=7)
    assert first == {"type": "ack", "data": {"text": "a", "by": "alice"}, "id": "a"}
    assert second["type"] == "ack" and second["data"]["text"] == "7"
    anonymous_error = await client.receive("error")
    assert "id" not in anonymous_error
    await assert_open(client)
    assert client.frames == []


@pytest.mark.gen_test
async def test_handler_errors(ws_connect, caplog):
    client = await connect(ws_connect, "alice")
    api = await client.request("fail", {"kind": "api"})
    assert api["data"] == {"code": "NOT_FOUND", "message": "No such thing"}
    with caplog.at_level(logging.ERROR, logger="vachat.ws"):
        crash = await client.request("fail", {"kind": "crash"})
    assert crash["data"] == {"code": "INTERNAL", "message": "Internal server error"}
    logged = [r for r in caplog.records if r.name == "vachat.ws" and "fail" in r.getMessage()]
    record = logged[0]
    # with the JSON log handlers installed, their redacting filter moves the traceback to exc_text
    traceback = record.exc_text or (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
    assert "Traceback" in traceback and "RuntimeError: boom" in traceback
    assert "boom" not in json.dumps(crash)
    await assert_open(client)


@pytest.mark.gen_test
async def test_ping_pong(ws_connect):
    client = await connect(ws_connect, "alice")
    with_id = await client.request("ping")
    assert with_id["type"] == "pong" and with_id["id"] == "r1" and isinstance(with_id["data"]["time"], int)
    client.send("ping")
    without_id = await client.receive("pong")
    assert "id" not in without_id
    await assert_open(client)
    assert client.frames == []  # no ack besides the pong


# ---------------------------------------------------------------------------
# limits
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.vachat(config={"ws_rate_limit": "5/10s"})
async def test_rate_limit_then_4429_for_a_flood(ws_connect):
    client = await connect(ws_connect, "alice")
    for _ in range(5):
        assert (await client.request("ping"))["type"] == "pong"
    limited = await client.request("ping")
    assert limited["type"] == "error" and limited["data"]["code"] == "RATE_LIMITED"
    assert limited["data"]["retryAfter"] >= 1
    for n in range(40):  # ignores RATE_LIMITED and keeps going
        client.send("ping", id=f"f{n}")
    code, reason = await client.closed()
    assert code == 4429
    refused = [f for f in client.frames if f["type"] == "error"]
    assert refused and all(f["data"]["code"] == "RATE_LIMITED" for f in refused)


@pytest.mark.gen_test
async def test_per_event_rate(ws_connect):
    client = await connect(ws_connect, "alice")
    assert (await client.request("limited"))["type"] == "ack"
    assert (await client.request("limited"))["type"] == "ack"
    third = await client.request("limited")
    assert third["type"] == "error" and third["data"]["code"] == "RATE_LIMITED"
    await assert_open(client)  # other events are not limited by it


@pytest.mark.gen_test
@pytest.mark.vachat(config={"ws_max_message_size": 1024})
async def test_oversize_frame_closes_the_socket(app, ws_connect):
    client = await connect(ws_connect, "alice")
    assert (await client.request("echo", {"text": "x" * 100}))["type"] == "ack"
    client.send_raw(json.dumps({"type": "echo", "data": {"text": "x" * 2000}}))
    code, _ = await client.closed()
    # Tornado writes close 1009 and drops the connection without reading the payload; the
    # client sees 1009 when the close frame beats the TCP reset, else no code at all.
    assert code in (1009, None)
    other = await connect(ws_connect, "bob")
    await assert_open(other)


@pytest.mark.gen_test
@pytest.mark.vachat(config={"ws_outbound_limit": 64 * 1024})
async def test_slow_consumer_closed_4408(app, http_server, http_port):
    sock, received = await raw_upgrade(http_port, as_user("slow"), rcvbuf=4096)
    loop = asyncio.get_running_loop()
    try:
        while app.hub.room_size("user:slow") == 0:
            await asyncio.sleep(0.01)
        [conn] = app.hub.connections_of("slow")
        published = 0
        while not conn.is_closing:  # the client reads nothing meanwhile
            await app.hub.publish("user:slow", "blob", {"n": published, "pad": "p" * 8000})
            published += 1
            assert published < 20_000, "never closed"
        assert published > 8  # kernel buffers took some, then the hub's bounded queue
        close_frame = None
        data = bytearray(received)
        while close_frame is None:  # now read everything: the frames, then the close frame
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 5)
            assert chunk, "connection dropped before the close frame"
            data.extend(chunk)
            frames, rest = parse_frames(data)
            data = bytearray(rest)
            close_frame = next((payload for opcode, payload in frames if opcode == 0x8), None)
        assert struct.unpack("!H", close_frame[:2])[0] == 4408
        assert close_frame[2:] == b"too slow"
        await loop.sock_sendall(sock, client_frame(0x8, close_frame[:2]))
        while app.hub.connection_count:
            await asyncio.sleep(0.01)
    finally:
        sock.close()


async def _read_frames(sock, buffer: bytearray) -> list[tuple[int, bytes]]:
    """The next complete frames from a raw socket (``buffer`` keeps what is incomplete)."""
    loop = asyncio.get_running_loop()
    while True:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 5)
        assert chunk, "connection dropped"
        buffer.extend(chunk)
        frames, rest = parse_frames(buffer)
        buffer[:] = rest
        if frames:
            return frames


@pytest.mark.gen_test
@pytest.mark.vachat(config={"ws_ping_interval": 0.2, "ws_ping_timeout": 0.2})
async def test_shared_pings_keep_an_answering_socket_and_close_a_silent_one(app, http_server, http_port):
    sock, received = await raw_upgrade(http_port, as_user("pinged"))
    loop = asyncio.get_running_loop()
    try:
        buffer, pings = bytearray(received), 0
        while pings < 3:  # answer three pings: the socket stays open
            for opcode, payload in await _read_frames(sock, buffer):
                assert opcode != 0x8, f"closed although it answered every ping: {payload!r}"
                if opcode == 0x9:
                    pings += 1
                    await loop.sock_sendall(sock, client_frame(0xA, payload))
        [conn] = app.hub.connections_of("pinged")
        assert conn.ws_connection._ping_coroutine is None  # no task per socket: the hub's timer pings
        assert len(app.hub.pinger) == 1
        close_frame = None
        while close_frame is None:  # then fall silent: the next ping's timeout closes it
            close_frame = next((payload for opcode, payload in await _read_frames(sock, buffer)
                                if opcode == 0x8), None)
        assert struct.unpack("!H", close_frame[:2])[0] == 1000
        assert close_frame[2:] == b"ping timed out"
        await loop.sock_sendall(sock, client_frame(0x8, close_frame[:2]))
        while app.hub.connection_count:
            await asyncio.sleep(0.01)
        assert len(app.hub.pinger) == 0
    finally:
        sock.close()


# ---------------------------------------------------------------------------
# rooms and disconnects
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_room_broadcast_reaches_members_only(app, ws_connect):
    alice = await connect(ws_connect, "alice")
    bob = await connect(ws_connect, "bob")
    carol = await connect(ws_connect, "carol")
    for client in (alice, bob):
        assert (await client.request("join", {"room": "conversation:c1"}))["type"] == "ack"
    assert app.hub.room_size("conversation:c1") == 2

    assert await app.hub.publish("conversation:c1", "new-message", {"content": "hello"}) == 2
    for client in (alice, bob):
        assert (await client.receive("new-message"))["data"] == {"content": "hello"}
    await assert_open(carol)
    assert carol.frames == []  # a frame to carol would have arrived before the pong

    shouted = await alice.request("shout", {"room": "conversation:c1", "text": "hey"})
    assert shouted["data"] == {"delivered": 1}  # not back to alice
    assert (await bob.receive("shout"))["data"] == {"text": "hey", "from": "alice"}

    await bob.request("leave", {"room": "conversation:c1"})
    await app.hub.publish("conversation:c1", "new-message", {"content": "again"})
    assert (await alice.receive("new-message"))["data"]["content"] == "again"
    await assert_open(bob)
    assert bob.frames == []

    alice.close()
    while app.hub.room_size("conversation:c1"):
        await asyncio.sleep(0.01)  # a closed socket leaves its rooms
    assert app.hub.room_size("user:alice") == 0


@pytest.mark.gen_test
async def test_a_room_told_over_several_turns_keeps_every_socket_in_order(app, ws_connect, monkeypatch):
    monkeypatch.setattr(hub_module, "SOCKETS_PER_TURN", 2)  # a room of six is told over three turns
    alice = await connect(ws_connect, "alice")
    others = [await connect(ws_connect, f"user{n}") for n in range(5)]
    for client in (alice, *others):
        assert (await client.request("join", {"room": "conversation:big"}))["type"] == "ack"
    for n in range(3):  # sent back to back: each reply queues behind the broadcasts before it
        alice.send("shout", {"room": "conversation:big", "text": f"t{n}"}, id=f"s{n}")
    alice.send("ping", id="p")
    await alice.receive(id="p")
    assert [(f["type"], f.get("id"), f["data"]) for f in alice.frames] == [
        ("ack", f"s{n}", {"delivered": 5}) for n in range(3)]
    for client in others:
        for n in range(3):
            assert (await client.receive())["data"] == {"text": f"t{n}", "from": "alice"}
    # A frame to one socket, and a close, after a broadcast: the broadcast first.
    await app.hub.publish("conversation:big", "broadcast", {"n": 1})
    for n in range(4):
        [conn] = app.hub.connections_of(f"user{n}")
        app.hub.send(conn, "direct", {"n": 2})
    await app.hub.disconnect(user_id="user4", code=4401, reason="Session ended")
    for client in others[:4]:
        assert [(await client.receive())["type"] for _ in range(2)] == ["broadcast", "direct"]
    assert (await others[4].receive())["type"] == "broadcast"
    assert await others[4].closed() == (4401, "Session ended")


@pytest.mark.gen_test
async def test_user_room_gets_events_on_every_socket_of_the_user(app, ws_connect):
    phone = await connect(ws_connect, "alice", session="phone")
    laptop = await connect(ws_connect, "alice", session="laptop")
    await app.hub.publish("user:alice", "notice", {"n": 1})
    for client in (phone, laptop):
        assert (await client.receive("notice"))["data"] == {"n": 1}
    # what another node publishes arrives through the broker callback
    app.hub.on_remote_message("user:alice", encode_event("notice", {"n": 2}))
    for client in (phone, laptop):
        assert (await client.receive("notice"))["data"] == {"n": 2}


@pytest.mark.gen_test
async def test_disconnect_user_and_session(app, ws_connect, monkeypatch):
    sent = []

    async def publish_control(payload):
        sent.append(json.loads(payload))

    monkeypatch.setattr(app.broker, "publish_control", publish_control)
    phone = await connect(ws_connect, "alice", session="phone")
    laptop = await connect(ws_connect, "alice", session="laptop")
    bob = await connect(ws_connect, "bob")

    assert await app.hub.disconnect(session_id="phone", reason="Session revoked") == 1
    assert (await phone.closed()) == (4401, "Session revoked")
    await assert_open(laptop)

    assert await app.hub.disconnect(user_id="alice", code=4401, reason="Account disabled") == 1
    assert (await laptop.closed()) == (4401, "Account disabled")
    await assert_open(bob)
    assert [m["op"] for m in sent] == ["disconnect", "disconnect"]  # other nodes are told

    # and a disconnect another node sends
    app.hub.on_remote_message(CONTROL_ROOM, json.dumps(
        {"op": "disconnect", "userId": "bob", "sessionId": None, "code": 4401, "reason": "elsewhere"}).encode())
    assert (await bob.closed()) == (4401, "elsewhere")
    while app.hub.connection_count:
        await asyncio.sleep(0.01)
    assert app.metrics.value("vachat_ws_connections") == 0
    assert app.metrics.value("vachat_ws_forced_closes_total", {"code": 4401}) == 3


@pytest.mark.gen_test
async def test_a_closed_socket_is_freed_at_once_not_left_to_a_full_collection(app, ws_connect):
    """A closed socket's objects (its handler, protocol, stream, the hub's record) are freed as
    it closes: with reference cycles among them they waited for the next full collection, a
    walk over every live object that grows with the sockets a node holds."""
    gc.disable()  # only reference counting can free them now
    try:
        clients = [await connect(ws_connect, "alice") for _ in range(3)]
        for client in clients:  # the frame path makes the handlers' context too
            assert (await client.request("echo", {"text": "hi"}))["type"] == "ack"
        handlers = [weakref.ref(handler) for handler in app.hub.connections()]
        assert len(handlers) == 3
        for client in clients:
            client.close()
        await eventually(lambda: app.hub.connection_count == 0, what="the server to see the sockets close")
        await eventually(lambda: all(handler() is None for handler in handlers), what="the closed sockets freed")
    finally:
        gc.enable()


@pytest.mark.gen_test
async def test_shutdown_closes_sockets_with_1001_and_refuses_new_ones(app, ws_connect):
    alice = await connect(ws_connect, "alice")
    anonymous = await ws_connect()
    await app.hub.close_all(1001, "Server shutting down")
    for client in (alice, anonymous):
        assert (await client.closed()) == (1001, "Server shutting down")
    assert app.hub.connection_count == 0
    app.shutting_down = True
    try:
        late = await ws_connect(headers=as_user("bob"))
        assert (await late.closed()) == (1001, "Server shutting down")
    finally:
        app.shutting_down = False  # let the fixture's own shutdown run


@pytest.mark.gen_test
async def test_frames_get_the_same_json_checks_as_bodies(app, ws_connect):
    client = await connect(ws_connect, "alice")
    for raw in ('{"type":"echo","id":"n1","data":{"text":"a\\u0000b"}}',
                '{"type":"echo","id":"n2","data":{"text":"\\ud800"}}',
                '{"type":"echo","id":"n3","data":{"text":NaN}}'):
        client.send_raw(raw)
        frame_id = raw.split('"id":"')[1].split('"')[0]
        reply = await client.receive(id=frame_id)
        assert reply["type"] == "error" and reply["data"]["code"] == "VALIDATION_FAILED", reply
    await assert_open(client)
