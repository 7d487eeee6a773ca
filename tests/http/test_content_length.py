"""A Content-Length that is not a plain number is a 400 with the envelope, counted by the
rate limiter like any request and logged in one line, never a 500 with a traceback. A WebSocket
upgrade that carries one gets the same 400, not the 413 of an upgrade that declares a body."""

import asyncio
import json

import pytest

MALFORMED = {
    "superscript two (latin-1)": b"\xb2",
    "superscript two (UTF-8)": "²".encode(),
    "4,300 digits": b"1" * 4300,
    "two different lengths": b"2, 3",
}


async def raw_request(port: int, content_length: bytes) -> tuple[int, dict[str, str], bytes]:
    """A login whose Content-Length is ``content_length``: the status, headers and body of the
    answer, read until the server closes the connection."""
    return await raw_answer(port, b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                  b"Content-Type: application/json\r\n"
                                  b"Content-Length: " + content_length + b"\r\n\r\n{}")


async def raw_answer(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is: the status, headers and body of the answer, read until the
    server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)  # to EOF: the server closes after answering
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.gen_test(timeout=60)
async def test_a_malformed_content_length_is_400_counted_and_logged_in_one_line(server_process):
    allowed = len(MALFORMED)
    server = server_process({"RATE_LIMIT_GLOBAL": f"{allowed}/60s"})
    await server.wait_ready()
    for name, value in MALFORMED.items():
        status, headers, body = await raw_request(server.port, value)
        assert status == 400, (name, body)
        envelope = json.loads(body)
        assert envelope["success"] is False and envelope["code"] == "VALIDATION_FAILED", (name, envelope)
        assert envelope["details"][0]["field"] == "Content-Length"
        assert headers["connection"] == "close"
    status, headers, body = await raw_request(server.port, b"\xb2")
    assert status == 429, body  # the limiter counted every malformed request
    assert json.loads(body)["code"] == "RATE_LIMITED"

    server.terminate()
    assert await server.wait_exit() == 0
    log = server.log_path.read_text()
    assert "Traceback" not in log and "Malformed HTTP message" not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    logins = [line for line in lines if line.get("route") == "/api/auth/login"]
    assert [line["status"] for line in logins] == [400] * allowed + [429]
    assert [line for line in lines if line["level"] in ("ERROR", "CRITICAL")] == []


def upgrade(content_length: bytes) -> bytes:
    """A WebSocket upgrade of /ws that carries ``Content-Length: content_length``."""
    return (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Content-Length: " + content_length + b"\r\n\r\n")


@pytest.mark.gen_test(timeout=60)
async def test_an_upgrade_with_a_malformed_content_length_is_the_same_400(server_process):
    server = server_process()
    await server.wait_ready()
    for value in (b"abc", b"-1", b"1,2", *MALFORMED.values()):
        status, headers, body = await raw_answer(server.port, upgrade(value))
        assert status == 400, (value, body)
        envelope = json.loads(body)
        assert envelope["success"] is False and envelope["code"] == "VALIDATION_FAILED", (value, envelope)
        assert envelope["details"][0]["field"] == "Content-Length"
        assert headers["connection"] == "close"
        # The REST routes answer the same length the same way, a GET's as a POST's.
        rest = b"GET /api/auth/me HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + value + b"\r\n\r\n"
        rest_status, _, rest_body = await raw_answer(server.port, rest)
        assert (rest_status, json.loads(rest_body)["code"]) == (400, "VALIDATION_FAILED"), (value, rest_body)
        assert (await raw_request(server.port, value))[0] == 400, value
    # A length that is a number keeps its answers: a body is a 413, none an upgrade.
    status, _, body = await raw_answer(server.port, upgrade(b"5"))
    assert (status, json.loads(body)["code"]) == (413, "PAYLOAD_TOO_LARGE")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(upgrade(b"0"))
        assert (await asyncio.wait_for(reader.readline(), 10)).split()[1] == b"101"
    finally:
        writer.close()

    server.terminate()
    assert await server.wait_exit() == 0
    log = server.log_path.read_text()
    assert "Traceback" not in log and "Malformed HTTP message" not in log
