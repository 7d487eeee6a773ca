"""More work than database connections: requests wait their turn and are answered, never 500.

The first case is the one that failed every time: a server restarted on a PostgreSQL database
it had used before held one pooled connection on its main thread (the start-up migration
check), so one database thread of the pool always waited for a connection that never came
free, and its request ended, after the pool's timeout, in a 500.
"""

import asyncio
import secrets

import pytest

from vachat.testing import assert_error, needs_postgres, open_websocket

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


def multipart_text_upload(text: bytes, user: str) -> tuple[bytes, bytes]:
    """The head and body of a text file upload to ``/api/files/upload``."""
    boundary = b"vachat-test-boundary"
    body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\n"
            b"Content-Type: text/plain\r\n\r\n" + text + b"\r\n--" + boundary + b"--\r\n")
    head = (b"POST /api/files/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer test:" + user.encode() + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    return head, body


@pytest.mark.gen_test(timeout=120)
async def test_a_streaming_reply_and_an_upload_under_way_hold_no_connection(server_process):
    server = server_process({"VACHAT_PLUGINS": "chat,ai,files,testauth", "DATABASE_POOL_SIZE": "1",
                             "AI_ECHO_DELAY": "0.1"})
    await server.wait_ready()
    user = f"streamer-{secrets.token_hex(4)}"  # the session's database holds other tests' rows
    caller = {"Authorization": f"Bearer test:{user}"}
    conversation = (await server.fetch("/api/chat/conversations", method="POST", json={"title": "t"},
                                       headers=caller)).data["id"]
    socket = await open_websocket(server.ws_url, caller)
    await socket.receive("ready")
    assert (await socket.request("join-conversation", {"conversationId": conversation}))["type"] == "ack"
    words = " ".join(f"word{number}" for number in range(200))  # 20 s of reply at 0.1 s a word
    sent = await socket.request("send-message", {"conversationId": conversation, "content": words,
                                                 "requiresAIResponse": True})
    assert sent["type"] == "ack", sent
    await socket.receive("ai-delta", timeout=30)  # the reply is streaming

    head, body = multipart_text_upload(b"some notes\n" * 1000, user)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head + body[:len(body) // 2])  # the upload is being read
    await writer.drain()

    # With one database connection, the database still serves everyone else meanwhile.
    listed = await server.fetch("/api/chat/conversations", headers=caller)
    assert listed.code == 200 and listed.json["pagination"]["total"] == 1
    assert [frame for frame in socket.frames if frame["type"] == "ai-done"] == []  # still streaming

    writer.write(body[len(body) // 2:])
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 30)
    assert status_line.split()[1] == b"201", status_line
    writer.close()
    assert (await socket.request("stop-generation", {"conversationId": conversation}))["type"] == "ack"
    assert (await socket.receive("ai-done", timeout=30))["data"]["finishReason"] == "cancelled"
    socket.close()
    server.terminate()
    assert await server.wait_exit() == 0


@needs_postgres
@pytest.mark.vachat(config={"database_pool_size": 1, "database_pool_timeout": 0.5}, plugins=["chat"])
@pytest.mark.gen_test(timeout=60)
async def test_waiting_past_the_pool_timeout_is_503_with_retry_after(app, fetch):
    assert (await fetch("/api/chat/conversations", user="alice")).code == 200
    # The one pooled connection goes from the database thread to this one, as a connection
    # held elsewhere would be.
    await app.db.run(app.db.engine.close)
    app.db.engine.connect()
    try:
        refused = await fetch("/api/chat/conversations", user="alice")
        assert_error(refused, 503, "UNAVAILABLE")
        assert refused.headers["Retry-After"] == "1"
    finally:
        app.db.engine.close()
    assert (await fetch("/api/chat/conversations", user="alice")).code == 200
