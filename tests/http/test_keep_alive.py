"""An answer sent before a request's body was read never resets the connection.

Uploads refused early (a field the form does not take: 400, content of a refused type: 415, a
declared length over the cap: 413) are followed on the same keep-alive connection by another
request, which must get its answer: the server drains a small rest of body and keeps the
connection, or says ``Connection: close`` and closes only after the client has read the answer.
Through a real ``vachat serve``, with httpx (as a client library reuses connections) and with
raw sockets (to see exactly what the server does on the wire).
"""

import asyncio
import secrets
import socket

import httpx
import pytest

from vachat.early_answers import DRAIN_MAX_BYTES

# The upload cap of these tests: small, so that over-cap bodies are quick to send.
FILE_CAP = 64 * 1024
ROUNDS = 100
# Bodies beyond what the server drains: each is sent whole by httpx, so fewer rounds.
LARGE_ROUNDS = 5
HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"


def multipart(data: bytes, name: str = "notes.txt", **fields: str) -> tuple[bytes, str]:
    boundary = "vachat" + secrets.token_hex(12)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
             for key, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# (what is refused, the body, the status it gets)
REFUSALS = {
    "unknown-field": (lambda: multipart(b"notes\n" * 100, colour="blue"), 400),
    "content": (lambda: multipart(HTML, name="page.txt"), 415),
    "declared-over-cap": (lambda: multipart(b"x" * (FILE_CAP * 2)), 413),
}


@pytest.fixture
def server(io_loop, server_process):
    process = server_process({"MAX_FILE_SIZE": str(FILE_CAP)})
    io_loop.run_sync(process.wait_ready, timeout=60)
    return process


@pytest.fixture
def user(io_loop, make_user):
    return io_loop.run_sync(make_user)


async def refused_then_me(server, user, body: bytes, content_type: str, status: int, rounds: int) -> None:
    headers = {**user.auth_headers, "Content-Type": content_type}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        for _ in range(rounds):
            response = await client.post("/api/files/upload", content=body, headers=headers)
            assert response.status_code == status, response.text
            assert response.json()["success"] is False
        me = await client.get("/api/auth/me", headers=user.auth_headers)
        assert me.status_code == 200 and me.json()["data"]["email"] == user.email


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("refusal", sorted(REFUSALS))
async def test_refused_uploads_on_one_keep_alive_client_never_break_the_next_request(server, user, refusal):
    make_body, status = REFUSALS[refusal]
    body, content_type = make_body()
    await refused_then_me(server, user, body, content_type, status, ROUNDS)  # any transport error fails it


@pytest.mark.gen_test(timeout=120)
async def test_a_refused_body_too_large_to_drain_still_ends_cleanly(server, user):
    body, content_type = multipart(b"x" * (DRAIN_MAX_BYTES + 512 * 1024))
    await refused_then_me(server, user, body, content_type, 413, LARGE_ROUNDS)


# -- raw sockets --------------------------------------------------------------


async def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response (status, lower-cased headers, body) read off ``sock``; ``buffer`` keeps
    whatever came after it."""
    loop = asyncio.get_running_loop()
    while b"\r\n\r\n" not in buffer:
        data = await loop.sock_recv(sock, 65536)
        assert data, f"connection closed before a response: {bytes(buffer)!r}"
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    buffer[:] = rest
    while len(buffer) < length:
        data = await loop.sock_recv(sock, 65536)
        assert data, "connection closed in the middle of a response body"
        buffer += data
    body = bytes(buffer[:length])
    del buffer[:length]
    return int(lines[0].split()[1]), headers, body


async def until_end(sock: socket.socket) -> bytes:
    """What the server still sends before it ends the connection: a reset fails the test."""
    loop = asyncio.get_running_loop()
    received = b""
    while data := await asyncio.wait_for(loop.sock_recv(sock, 65536), 10):
        received += data
    return received


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("refusal", [*sorted(REFUSALS), "too-large-to-drain", "chunked-over-cap"])
async def test_a_second_request_after_a_refusal_gets_its_answer(server, user, refusal):
    if refusal == "too-large-to-drain":
        body, content_type, status = *multipart(b"x" * (DRAIN_MAX_BYTES + 512 * 1024)), 413
    elif refusal == "chunked-over-cap":
        body, content_type, status = *multipart(b"x" * (FILE_CAP * 2)), 413
    else:
        make_body, status = REFUSALS[refusal]
        body, content_type = make_body()
    if refusal == "chunked-over-cap":
        framing = "Transfer-Encoding: chunked\r\n"
        payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    else:
        framing = f"Content-Length: {len(body)}\r\n"
        payload = body
    head = (f"POST /api/files/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {user.auth_headers['Authorization']}\r\n"
            f"Content-Type: {content_type}\r\n{framing}\r\n").encode()
    loop = asyncio.get_running_loop()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.setblocking(False)
        await loop.sock_sendall(sock, head + payload)
        buffer = bytearray()
        code, headers, _ = await read_response(sock, buffer)
        assert code == status
        # The scenario: a client that reuses the connection a moment after the answer.
        await asyncio.sleep(0.05)
        if headers.get("connection", "").lower() == "close":
            # Told so: the connection ends, cleanly (no reset), and nothing more comes.
            assert await until_end(sock) == b""
            return
        await loop.sock_sendall(sock, b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        code, _, body = await read_response(sock, buffer)
        assert code == 200 and b'"ok"' in body
