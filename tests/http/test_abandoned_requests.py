"""A client that hangs up before its body has all arrived leaves nothing behind: not the
request (which would hold a shutdown for its whole grace period) nor the body read so far."""

import asyncio

import pytest

from vachat.testing import eventually

from .test_bodies import rss_bytes

BODY_DECLARED = 1024 * 1024  # MAX_JSON_BODY: the largest body a login may declare
ABANDONED = 200
AT_ONCE = 10
# 200 bodies of 1 MiB each stayed in memory before (+200 MiB). What is left is the allocator's
# high-water mark, which depends on how many bodies the server held at once: a loaded machine
# lets more of them pile up before it reads them (measured +3 MiB alone, +34 MiB under load,
# +86 MiB once on a machine running several test suites after a warm-up of 20). So the warm-up
# abandons as many as the measured round: the high-water mark is reached before measuring, and
# a leak still shows as the whole round's bodies (+200 MiB).
WARM_UP = ABANDONED
RSS_GROWTH_BOUND = 64 * 1024 * 1024
SHUTDOWN_GRACE = 60  # s: the test fails long before a shutdown that waits for it


async def abandon_a_login(port: int) -> None:
    """Send a login's headers and all but the last byte of its body, then hang up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {BODY_DECLARED}\r\n\r\n").encode())
    writer.write(b'{"email": "' + b"a" * (BODY_DECLARED - 12))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def abandon(port: int, count: int) -> None:
    for _ in range(count // AT_ONCE):
        await asyncio.gather(*(abandon_a_login(port) for _ in range(AT_ONCE)))


async def requests_in_flight(server) -> float:
    metrics = (await server.fetch("/metrics")).body.decode()
    line = next(line for line in metrics.splitlines() if line.startswith("vachat_http_requests_in_flight "))
    return float(line.split()[1]) - 1  # less the /metrics request itself


@pytest.mark.gen_test(timeout=120)
async def test_abandoned_bodies_are_freed_and_shutdown_is_immediate(server_process):
    server = server_process({"SHUTDOWN_GRACE": str(SHUTDOWN_GRACE)})
    await server.wait_ready()
    pid = server.process.pid

    await abandon(server.port, WARM_UP)  # the allocator's arenas reach their working size
    await eventually(lambda: _none_in_flight(server), what="the warm-up requests to be forgotten")
    before = rss_bytes(pid)
    await abandon(server.port, ABANDONED)
    await eventually(lambda: _none_in_flight(server), what="the abandoned requests to be forgotten")
    after = rss_bytes(pid)
    print(f"RSS before {ABANDONED} abandoned 1 MiB bodies: {before / 2**20:.1f} MiB, "
          f"after: {after / 2**20:.1f} MiB (growth {(after - before) / 2**20:+.1f} MiB)")
    assert after - before < RSS_GROWTH_BOUND

    server.terminate()
    assert await server.wait_exit(timeout=SHUTDOWN_GRACE / 2) == 0
    assert "waiting for in-flight requests" not in server.output()


async def _none_in_flight(server) -> bool:
    return await requests_in_flight(server) == 0

