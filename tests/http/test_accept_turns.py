"""A burst of connections is taken from the kernel's queue a few at a time (``vachat.server.
accept_in_turns``), so the IOLoop's other work runs between them, and every one is served."""

import asyncio
import collections
import socket

import pytest

from vachat.server import ACCEPTS_PER_TURN, accept_in_turns

BURST = 3 * ACCEPTS_PER_TURN + 5
ENOUGH = 30.0  # s: far longer than a burst of a few dozen connections takes on a loaded machine


@pytest.mark.gen_test(timeout=60)
async def test_a_burst_is_accepted_a_few_per_turn_of_the_loop():
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.setblocking(False)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(BURST)]
    turn = 0

    def count_turns() -> None:  # runs once per iteration of the loop
        nonlocal turn
        turn += 1
        loop.call_soon(count_turns)

    accepted: list[int] = []  # per connection, the turn that took it
    all_taken = asyncio.Event()

    def on_connection(connection: socket.socket, address: object) -> None:
        connection.close()
        accepted.append(turn)
        if len(accepted) == BURST:
            all_taken.set()

    count_turns()
    stop = accept_in_turns(listener, on_connection)
    try:
        await asyncio.wait_for(all_taken.wait(), ENOUGH)
    finally:
        stop()
        listener.close()
        for client in clients:
            client.close()
    per_turn = collections.Counter(accepted)
    assert max(per_turn.values()) == ACCEPTS_PER_TURN
    assert len(per_turn) >= 4


@pytest.fixture
def server(io_loop, server_process):
    process = server_process()
    io_loop.run_sync(process.wait_ready, timeout=60)
    return process


@pytest.mark.gen_test(timeout=60)
async def test_every_connection_of_a_burst_is_served(server):
    async def ask() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
        return answer

    answers = await asyncio.wait_for(asyncio.gather(*(ask() for _ in range(BURST))), ENOUGH)
    assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answers)
