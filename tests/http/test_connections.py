"""Connections that hold the server (issue #7, item 2), through the real server.

Idle and slow connections are closed within HTTP_IDLE_TIMEOUT / HTTP_BODY_TIMEOUT; WebSocket
upgrades count against RATE_LIMIT_GLOBAL and are refused with 429 before the upgrade; open
sockets are capped per address (WS_MAX_PER_IP) and per user (WS_MAX_PER_USER); an unknown API
key is looked up once, not once per attempt.
"""

import asyncio
import socket

import pytest
import tornado.httpclient

import vachat.accounts.apikeys as apikeys
from vachat.accounts.cache import UnknownKeys
from vachat.testing import assert_error, eventually
from vachat.ws import CLOSE_TOO_MANY

PLUGINS = "testauth=vachat.testing_auth"
# Both timeouts are 1 s in these tests; a connection still open this long after (s) was not
# going to be closed by them (Tornado's defaults: an hour for headers, never for bodies).
CLOSE_WAIT = 10.0
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
           "Sec-WebSocket-Version": "13"}


@pytest.fixture
def server(io_loop, server_process):
    process = server_process({"VACHAT_PLUGIN_MODULES": PLUGINS, "HTTP_IDLE_TIMEOUT": "1", "HTTP_BODY_TIMEOUT": "1"})
    io_loop.run_sync(process.wait_ready, timeout=60)
    return process


async def connect(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by CLOSE_WAIT)."""
    loop = asyncio.get_running_loop()
    received = b""

    async def drain() -> None:
        nonlocal received
        while True:
            try:
                data = await loop.sock_recv(sock, 65536)
            except ConnectionResetError:
                return
            if not data:
                return
            received += data

    await asyncio.wait_for(drain(), CLOSE_WAIT)
    return received


async def send(sock: socket.socket, text: str) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, text.replace("\n", "\r\n").encode())


@pytest.mark.gen_test(timeout=60)
async def test_an_idle_connection_is_closed(server):
    with await connect(server.port) as sock:
        assert await until_closed(sock) == b""


@pytest.mark.gen_test(timeout=60)
async def test_a_kept_alive_connection_is_closed_once_idle(server):
    with await connect(server.port) as sock:
        await send(sock, "GET /health/live HTTP/1.1\nHost: x\n\n")
        assert (await until_closed(sock)).startswith(b"HTTP/1.1 200")


@pytest.mark.gen_test(timeout=60)
async def test_dripped_headers_are_cut_off(server):
    with await connect(server.port) as sock:
        await send(sock, "GET /health/live HTTP/1.1\n")
        closed = asyncio.ensure_future(until_closed(sock))
        try:
            while not closed.done():  # a header line every 200 ms, never the blank line
                await send(sock, "X-Drip: 1\n")
                await asyncio.sleep(0.2)
        except OSError:
            pass  # the server hung up mid-drip
        assert await closed == b""


@pytest.mark.gen_test(timeout=60)
async def test_a_half_sent_rest_body_is_dropped(server):
    with await connect(server.port) as sock:
        await send(sock, "POST /api/auth/login HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                         "Content-Length: 100\n\n{\"email\":")
        assert await until_closed(sock) == b""


@pytest.mark.gen_test(timeout=60)
async def test_a_half_sent_ws_body_is_refused_and_closed(server):
    for method in ("GET", "POST"):
        with await connect(server.port) as sock:
            head = "".join(f"{name}: {value}\n" for name, value in UPGRADE.items())
            await send(sock, f"{method} /ws HTTP/1.1\nHost: x\n{head}Content-Length: 100\n\n0123456789")
            answer = await until_closed(sock)
            assert answer.split(b" ")[1] in (b"413", b"405"), answer


# -- upgrades: rate and socket caps --------------------------------------------------------


async def refused_upgrade(fetch, **headers: str):
    return await fetch("/ws", headers={**UPGRADE, **headers})


@pytest.mark.gen_test
@pytest.mark.vachat(config={"rate_limit_global": "3/60s"})
async def test_upgrades_count_against_the_global_rate(fetch, ws_connect):
    for _ in range(3):
        await ws_connect()
    body = assert_error(await refused_upgrade(fetch), 429, "RATE_LIMITED")
    assert body["error"] == "Too many requests"
    response = await refused_upgrade(fetch)
    assert int(response.headers["Retry-After"]) >= 1
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await ws_connect()
    assert refused.value.code == 429


@pytest.mark.gen_test
@pytest.mark.vachat(config={"rate_limit_global": "3/60s"})
async def test_random_api_keys_on_upgrades_are_rate_limited_before_any_lookup(ws_connect, monkeypatch):
    lookups = count_lookups(monkeypatch)
    outcomes = []
    for number in range(10):
        try:
            socket_ = await ws_connect(headers={"X-API-Key": f"vak_{number:043d}"})
        except tornado.httpclient.HTTPClientError as refused:
            outcomes.append(refused.code)
        else:
            outcomes.append((await socket_.closed())[0])
    assert outcomes == [4401] * 3 + [429] * 7
    assert lookups == [f"{apikeys.hash_key(f'vak_{n:043d}')}" for n in range(3)]




@pytest.mark.gen_test
@pytest.mark.vachat(config={"ws_max_per_ip": 2})
async def test_open_sockets_per_address_are_capped(app, fetch, ws_connect):
    first = await ws_connect(user="alice")
    await ws_connect()  # unauthenticated sockets count too
    body = assert_error(await refused_upgrade(fetch, Authorization="Bearer test:bob"), 429, "RATE_LIMITED")
    assert body["error"] == "Too many connections from this address"
    first.close()
    await eventually(lambda: app.hub.connection_count == 1)
    await ws_connect(user="bob")  # a closed socket gives its slot back


@pytest.mark.gen_test
@pytest.mark.vachat(config={"ws_max_per_ip": 2})
async def test_refused_and_failed_upgrades_give_their_slot_back(app, fetch, ws_connect):
    for _ in range(5):
        assert (await fetch("/ws", headers={"Upgrade": "websocket"})).code == 400  # a bad handshake
    for _ in range(2):
        await ws_connect()


@pytest.mark.gen_test
@pytest.mark.vachat(config={"ws_max_per_user": 2})
async def test_open_sockets_per_user_are_capped(app, fetch, ws_connect):
    for _ in range(2):
        await (await ws_connect(user="alice")).receive("ready")
    body = assert_error(await refused_upgrade(fetch, Authorization="Bearer test:alice"), 429, "RATE_LIMITED")
    assert body["error"] == "Too many connections for this user"

    by_frame = await ws_connect()
    by_frame.send("auth", {"token": "test:alice"}, id="a1")
    assert await by_frame.closed() == (CLOSE_TOO_MANY, "Too many connections for this user")

    await (await ws_connect(user="bob")).receive("ready")  # other users are not affected
    assert len(app.hub.connections_of("alice")) == 2


# -- unknown API keys ------------------------------------------------------------------------


def count_lookups(monkeypatch) -> list[str]:
    """Record every database lookup of an API key (by its hash)."""
    lookups: list[str] = []
    real_load = apikeys._load

    def counting_load(key_hash):
        lookups.append(key_hash)
        return real_load(key_hash)

    monkeypatch.setattr(apikeys, "_load", counting_load)
    return lookups


@pytest.mark.gen_test
async def test_an_unknown_api_key_is_looked_up_once(app, fetch, ws_connect, make_user, monkeypatch):
    lookups = count_lookups(monkeypatch)
    unknown = "vak_" + "A" * 43
    for _ in range(5):
        assert_error(await fetch("/api/auth/me", headers={"X-API-Key": unknown}), 401, "UNAUTHORIZED")
    for _ in range(3):
        socket_ = await ws_connect(headers={"X-API-Key": unknown})
        assert (await socket_.closed())[0] == 4401
    assert lookups == [apikeys.hash_key(unknown)]

    # Malformed keys never reach the database.
    for bad in ("vak_short", "vak_" + "A" * 44, "vak_" + "!" * 43, "nope"):
        assert_error(await fetch("/api/auth/me", headers={"X-API-Key": bad}), 401, "UNAUTHORIZED")
    assert len(lookups) == 1

    # A real key is not affected by the memory of unknown ones.
    user = await make_user()
    created = await fetch("/api/auth/api-keys", method="POST", json={"name": "bot"}, user=user)
    assert created.code == 201, created.body
    key = created.data["key"]
    assert (await fetch("/api/auth/me", headers={"X-API-Key": key})).code == 200


def test_the_memory_of_unknown_keys_is_bounded_and_expires(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("vachat.accounts.cache.time.monotonic", lambda: clock[0])
    unknown = UnknownKeys(ttl=30, max_entries=3)
    for number in range(5):
        unknown.add(f"hash{number}")
    assert len(unknown) == 3
    assert "hash0" not in unknown and "hash4" in unknown
    clock[0] += 31
    assert "hash4" not in unknown
