"""A Content-Length that is not a plain number is a 400 with the envelope, counted by the
rate limiter like any request and logged in one line, never a 500 with a traceback."""

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
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + content_length + b"\r\n\r\n{}")
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
