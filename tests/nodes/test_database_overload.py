"""More work than database connections: requests wait their turn and are answered, never 500.

The first case is the one that failed every time: a server restarted on a PostgreSQL database
it had used before held one pooled connection on its main thread (the start-up migration
check), so one database thread of the pool always waited for a connection that never came
free, and its request ended, after the pool's timeout, in a 500.
"""

import asyncio

import pytest

from vachat.testing import needs_postgres, open_websocket

CONVERSATIONS = 64
AT_ONCE = 16


async def create_and_join(server, socket, number: int) -> tuple[int, str]:
    response = await server.fetch("/api/chat/conversations", method="POST", json={"title": f"c{number}"},
                                  headers={"Authorization": "Bearer test:alice"})
    if response.code != 201:
        return response.code, response.body.decode()
    reply = await socket.request("join-conversation", {"conversationId": response.data["id"]}, timeout=60)
    return (201, "") if reply["type"] == "ack" else (0, str(reply))


async def create_in_bursts(server) -> list[tuple[int, str]]:
    sockets = []
    for _ in range(AT_ONCE):
        socket = await open_websocket(server.ws_url, {"Authorization": "Bearer test:alice"})
        await socket.receive("ready")
        sockets.append(socket)
    outcomes = []
    try:
        for start in range(0, CONVERSATIONS, AT_ONCE):
            outcomes += await asyncio.gather(*(create_and_join(server, sockets[offset], start + offset)
                                               for offset in range(AT_ONCE)))
    finally:
        for socket in sockets:
            socket.close()
    return outcomes


PLUGINS = {"VACHAT_PLUGINS": "chat,testauth"}


@needs_postgres
@pytest.mark.gen_test(timeout=120)
async def test_a_restarted_server_answers_every_create_of_a_burst(server_process):
    first = server_process(PLUGINS)
    await first.wait_ready()
    first.terminate()
    assert await first.wait_exit() == 0

    second = server_process(PLUGINS)  # the same database, its migrations already applied
    await second.wait_ready()
    outcomes = await create_in_bursts(second)
    assert [outcome for outcome in outcomes if outcome[0] != 201] == []
    second.terminate()
    assert await second.wait_exit() == 0


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("pool_size", [1, 4])
async def test_a_burst_on_a_small_pool_is_answered_without_errors(server_process, pool_size):
    server = server_process({**PLUGINS, "DATABASE_POOL_SIZE": str(pool_size)})
    await server.wait_ready()
    outcomes = await create_in_bursts(server)
    assert [outcome for outcome in outcomes if outcome[0] != 201] == []
    listed = await server.fetch("/api/chat/conversations?limit=100", headers={"Authorization": "Bearer test:alice"})
    assert listed.json["pagination"]["total"] >= CONVERSATIONS
    server.terminate()
    assert await server.wait_exit() == 0
