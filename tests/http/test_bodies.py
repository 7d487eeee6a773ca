"""Request bodies nobody asked for (issue #7, item 1), through real server processes.

The connection caps every body at MAX_JSON_BODY; a request that has no business carrying a
body (a WebSocket upgrade, a GET) is refused before any of it is read; only a
``StreamingBodyHandler`` raises the cap, for its own authorised requests.
"""

import asyncio
import hashlib
import os
import socket

import pytest
import tornado.escape
import tornado.httpclient

from tests.plugins.upload_sink import SINK_LIMIT

PLUGINS = "testauth=vachat.testing_auth,sink=tests.plugins.upload_sink"
ALICE = {"Authorization": "Bearer test:alice"}
OVERSIZE = 11 * 1024 * 1024  # the review's bodies: MAX_FILE_SIZE + 1 MiB
ATTACKERS = 30
CHUNK = 64 * 1024
# Well under what 30 buffered 11 MiB bodies take (330 MiB), well over the noise of 30 small
# connections and their error answers.
MEMORY_GROWTH_ALLOWED = 40 * 1024 * 1024
# An answer that does not wait for the body comes at once; the body timeout is far longer.
PROMPT = 5.0


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def status_of(reader: asyncio.StreamReader) -> int:
    line = await reader.readline()
    return int(line.split()[1]) if line else 0


async def send_head(port: int, head: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.replace("\n", "\r\n").encode() + b"\r\n")
    await writer.drain()
    return reader, writer


async def answer_without_body(port: int, head: str) -> int:
    """Send only the head of a request that announces a body; the status that comes back
    while the body is still unsent (0 if the connection closed without one)."""
    reader, writer = await send_head(port, head)
    try:
        return await asyncio.wait_for(status_of(reader), PROMPT)
    finally:
        writer.close()


def upgrade_head(extra: str = "", method: str = "GET") -> str:
    return (f"{method} /ws HTTP/1.1\nHost: 127.0.0.1\nUpgrade: websocket\nConnection: Upgrade\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n{extra}")


@pytest.fixture
def server(io_loop, server_process):
    process = server_process({"VACHAT_PLUGIN_MODULES": PLUGINS, "HTTP_BODY_TIMEOUT": "60"})
    io_loop.run_sync(process.wait_ready, timeout=60)
    return process


@pytest.mark.gen_test(timeout=90)
async def test_memory_stays_flat_under_30_oversize_ws_bodies(server):
    pid = server.process.pid
    baseline = rss_bytes(pid)
    peak = baseline
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss_bytes(pid))
            await asyncio.sleep(0.01)

    async def attack() -> int:
        # Plain sockets: a failed send (the server hung up on the rest of the body) must not
        # hide the answer that came before it, as it would in a StreamReader.
        loop = asyncio.get_running_loop()
        with socket.socket() as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", server.port))
            head = f"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: {OVERSIZE}\r\n\r\n"
            await loop.sock_sendall(sock, head.encode())
            answer = asyncio.ensure_future(loop.sock_recv(sock, 1024))
            sent = 0
            try:
                while sent < OVERSIZE and not answer.done():  # the whole body, unless refused first
                    await loop.sock_sendall(sock, b"x" * CHUNK)
                    sent += CHUNK
            except OSError:
                pass
            first = await asyncio.wait_for(answer, 30)
        return int(first.split()[1]) if first else 0

    sampler = asyncio.ensure_future(sample())
    try:
        statuses = await asyncio.gather(*(attack() for _ in range(ATTACKERS)))
        peak = max(peak, rss_bytes(pid))
    finally:
        sampling = False
        await sampler
    assert statuses == [405] * ATTACKERS
    assert peak - baseline < MEMORY_GROWTH_ALLOWED, f"RSS grew by {(peak - baseline) / 2**20:.0f} MiB"


@pytest.mark.gen_test(timeout=60)
async def test_an_upgrade_that_declares_a_body_is_refused_before_it_is_read(server):
    assert await answer_without_body(server.port, upgrade_head("Content-Length: 500000\n")) == 413
    assert await answer_without_body(server.port, upgrade_head("Transfer-Encoding: chunked\n")) == 413
    assert await answer_without_body(server.port, upgrade_head(f"Content-Length: {OVERSIZE}\n")) == 413
    assert await answer_without_body(server.port, upgrade_head("Content-Length: 500000\n", method="POST")) == 405
    # A real upgrade still works.
    reader, writer = await send_head(server.port, upgrade_head())
    try:
        assert await asyncio.wait_for(status_of(reader), PROMPT) == 101
    finally:
        writer.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_get_with_a_body_is_refused_before_it_is_read(server):
    head = "GET /api/auth/me HTTP/1.1\nHost: x\nAuthorization: Bearer test:alice\nContent-Length: 500000\n"
    assert await answer_without_body(server.port, head) == 413


@pytest.mark.gen_test(timeout=60)
async def test_json_handlers_keep_the_json_cap(server):
    head = "POST /api/auth/login HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: 2000000\n"
    assert await answer_without_body(server.port, head) == 413


# -- StreamingBodyHandler -------------------------------------------------------------------


async def upload(server, path: str, body: bytes, headers: dict[str, str] | None = None, chunked: bool = False):
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        if chunked:
            async def producer(write):
                for start in range(0, len(body), CHUNK):
                    await write(body[start:start + CHUNK])
            request = tornado.httpclient.HTTPRequest(server.base_url + path, method="POST", headers=headers,
                                                     body_producer=producer, request_timeout=30)
        else:
            request = tornado.httpclient.HTTPRequest(server.base_url + path, method="POST", headers=headers,
                                                     body=body, request_timeout=30)
        return await client.fetch(request, raise_error=False)
    finally:
        client.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_streaming_handler_takes_bodies_past_the_json_cap(server):
    body = os.urandom(2 * 1024 * 1024)
    for chunked in (False, True):
        response = await upload(server, "/api/sink/big", body, ALICE, chunked=chunked)
        assert response.code == 201, response.body
        assert tornado.escape.json_decode(response.body)["data"] == {
            "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(), "by": "alice"}


@pytest.mark.gen_test(timeout=60)
async def test_a_streaming_handler_refuses_past_its_own_cap(server):
    over = SINK_LIMIT + 1
    head = f"POST /api/sink/big HTTP/1.1\nHost: x\nAuthorization: Bearer test:alice\nContent-Length: {over}\n"
    assert await answer_without_body(server.port, head) == 413
    # A chunked body is counted as it arrives: 413 once it passes the cap; the client may see
    # the connection reset while it is still sending.
    chunked = await upload(server, "/api/sink/big", os.urandom(over), ALICE, chunked=True)
    assert chunked.code in (413, 599), chunked.code


async def one_declared_chunk(port: int, head: str, size: int) -> tuple[int, bytes]:
    """Send ``head`` with a chunked body of one chunk declaring ``size`` bytes, then the bytes;
    the answer's status and body."""
    reader, writer = await send_head(port, head + "Transfer-Encoding: chunked\n")
    try:
        writer.write(f"{size:x}\r\n".encode())
        for start in range(0, size, CHUNK):
            writer.write(b"x" * min(CHUNK, size - start))
            await writer.drain()
        writer.write(b"\r\n0\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(status_of(reader), PROMPT)
        head_and_body = await asyncio.wait_for(reader.read(), PROMPT)
        return status, head_and_body.partition(b"\r\n\r\n")[2]
    finally:
        writer.close()


@pytest.mark.gen_test(timeout=60)
async def test_one_chunk_declaring_more_than_the_cap_gets_the_413_envelope(server):
    """Tornado judges a chunked body by what its chunks declare and answers a bare 400; the
    handler counts what arrives instead, and answers like for any other body too large."""
    json_head = "POST /api/auth/login HTTP/1.1\nHost: x\nContent-Type: application/json\nConnection: close\n"
    status, body = await one_declared_chunk(server.port, json_head, 1024 * 1024 + 1)
    assert status == 413 and tornado.escape.json_decode(body)["code"] == "PAYLOAD_TOO_LARGE"
    upload_head = "POST /api/sink/big HTTP/1.1\nHost: x\nAuthorization: Bearer test:alice\nConnection: close\n"
    status, body = await one_declared_chunk(server.port, upload_head, SINK_LIMIT + 1)
    assert status == 413 and tornado.escape.json_decode(body)["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.gen_test(timeout=60)
async def test_a_streaming_handler_reads_nothing_before_authorising(server):
    head = "POST /api/sink/big HTTP/1.1\nHost: x\nContent-Length: 2000000\n"
    assert await answer_without_body(server.port, head) == 401


@pytest.mark.gen_test(timeout=60)
async def test_a_streaming_handler_cap_given_per_route(server):
    assert (await upload(server, "/api/sink/small", b"x" * 1000, ALICE)).code == 201
    assert (await upload(server, "/api/sink/small", b"x" * 1001, ALICE)).code == 413
