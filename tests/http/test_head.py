"""``HEAD`` answers on every route that has a ``GET``: the same status and headers, no body.
Load balancers probe ``/health*`` with HEAD. Through a real ``vachat serve``."""

import socket

import pytest

# Headers that differ between two answers by nature, not by method.
PER_RESPONSE = {"x-request-id", "date", "x-ratelimit-remaining", "content-length"}


@pytest.fixture
def server(io_loop, server_process):
    process = server_process()
    io_loop.run_sync(process.wait_ready, timeout=60)
    return process


def raw_head(port: int, path: str, headers: dict[str, str]) -> bytes:
    """The raw bytes of one HEAD exchange: the server must end the message at the headers."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n{lines}Connection: close\r\n\r\n".encode())
        received = b""
        while data := sock.recv(65536):
            received += data
    return received


def comparable(headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.get_all() if name.lower() not in PER_RESPONSE}


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("path, auth", [
    ("/health", False), ("/health/live", False), ("/health/ready", False), ("/metrics", False),
    ("/api/openapi.json", False), ("/api/auth/me", True), ("/api/auth/me", False),
    ("/api/chat/conversations", True), ("/verify-email/" + "a" * 43, False), ("/api/no-such-route", False),
])
async def test_head_answers_like_get_without_a_body(server, make_user, path, auth):
    headers = (await make_user()).auth_headers if auth else {}
    got = await server.fetch(path, headers=headers)
    head = await server.fetch(path, "HEAD", headers=headers)
    assert head.code == got.code
    assert head.body == b""
    assert comparable(head.headers) == comparable(got.headers)
    if got.body:  # the length of the body it would have (metrics and timestamps vary between calls)
        assert int(head.headers["Content-Length"]) > 0
    # On the wire: nothing after the headers, whatever Content-Length says.
    raw = raw_head(server.port, path, headers)
    assert raw.split(b"\r\n")[0].split()[1] == str(got.code).encode()
    assert raw.endswith(b"\r\n\r\n")


@pytest.mark.gen_test(timeout=60)
async def test_head_on_a_route_without_get_is_405_and_options_lists_it_only_beside_get(server):
    assert (await server.fetch("/api/auth/login", "HEAD")).code == 405
    allowed = (await server.fetch("/api/auth/login", "OPTIONS")).headers["Allow"]
    assert "HEAD" not in allowed and "POST" in allowed
    allowed = (await server.fetch("/health", "OPTIONS")).headers["Allow"]
    assert "HEAD" in allowed and "GET" in allowed
