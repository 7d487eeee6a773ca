"""PostgreSQL out of reach (a proxy the test controls cuts every connection and refuses new
ones): REST answers 503 UNAVAILABLE with Retry-After, sockets get an UNAVAILABLE error with
retryAfter, never a 500; once the database is back the same server serves again."""

from urllib.parse import urlparse, urlunparse

import pytest

from tests.client.helpers import TcpProxy
from vachat.testing import assert_error, eventually, needs_postgres, open_websocket

ALICE = {"Authorization": "Bearer test:alice"}


def through(proxy: TcpProxy, database_url: str) -> str:
    parsed = urlparse(database_url)
    return urlunparse(parsed._replace(netloc=f"{parsed.username or 'postgres'}@127.0.0.1:{proxy.port}"))


@needs_postgres
@pytest.mark.gen_test(timeout=120)
async def test_an_unreachable_database_is_503_and_the_server_recovers(server_process, vachat_database_url):
    target = urlparse(vachat_database_url).port or 5432
    async with TcpProxy(target) as proxy:
        server = server_process({"DATABASE_URL": through(proxy, vachat_database_url),
                                 "VACHAT_PLUGINS": "chat,testauth"})
        await server.wait_ready()
        created = await server.fetch("/api/chat/conversations", method="POST", json={"title": "t"}, headers=ALICE)
        assert created.code == 201, created.body
        conversation = created.data["id"]
        socket = await open_websocket(server.ws_url, ALICE)
        await socket.receive("ready")
        assert (await socket.request("join-conversation", {"conversationId": conversation}))["type"] == "ack"

        proxy.cut()
        # Every database thread finds its connection gone, then the new one refused: all 503.
        for _ in range(6):
            response = await server.fetch(f"/api/chat/conversations/{conversation}", headers=ALICE)
            assert_error(response, 503, "UNAVAILABLE")
            assert response.headers["Retry-After"] == "1"
        sent = await server.fetch("/api/chat/message", method="POST", headers=ALICE,
                                  json={"conversationId": conversation, "content": "lost?", "clientMessageId": "rest-1"})
        assert_error(sent, 503, "UNAVAILABLE")
        assert sent.headers["Retry-After"] == "1"
        for attempt in range(3):
            reply = await socket.request("send-message", {"conversationId": conversation, "content": "during",
                                                          "clientMessageId": "ws-1"})
            assert reply["type"] == "error", reply
            assert reply["data"]["code"] == "UNAVAILABLE" and reply["data"]["retryAfter"] == 1, reply
        assert (await server.fetch("/health/ready")).code == 503

        proxy.restore()

        async def served() -> bool:
            response = await server.fetch(f"/api/chat/conversations/{conversation}", headers=ALICE)
            assert response.code in (200, 503), response.body
            return response.code == 200

        await eventually(served, timeout=30, what="the server to serve again")
        reply = await socket.request("send-message", {"conversationId": conversation, "content": "after",
                                                      "clientMessageId": "ws-1"})
        for _ in range(8):  # a database thread may still hold a connection from before the cut
            if reply["type"] == "ack":
                break
            assert reply["data"]["code"] == "UNAVAILABLE", reply
            reply = await socket.request("send-message", {"conversationId": conversation, "content": "after",
                                                          "clientMessageId": "ws-1"})
        assert reply["type"] == "ack", reply
        messages = await server.fetch(f"/api/chat/conversations/{conversation}/messages", headers=ALICE)
        assert messages.code == 200
        assert [m["content"] for m in messages.data["items"]] == ["after"]
        socket.close()
        server.terminate()
        assert await server.wait_exit() == 0
        assert "\"status\": 500" not in server.log_path.read_text()


@needs_postgres
@pytest.mark.gen_test(timeout=120)
async def test_an_ai_reply_finished_while_the_database_is_away_is_stored_when_it_returns(
        server_process, vachat_database_url):
    target = urlparse(vachat_database_url).port or 5432
    words = " ".join(f"word{number}" for number in range(30))
    async with TcpProxy(target) as proxy:
        server = server_process({"DATABASE_URL": through(proxy, vachat_database_url),
                                 "VACHAT_PLUGINS": "chat,ai,testauth", "AI_ECHO_DELAY": "0.05"})
        await server.wait_ready()
        created = await server.fetch("/api/chat/conversations", method="POST", json={"title": "t"}, headers=ALICE)
        conversation = created.data["id"]
        socket = await open_websocket(server.ws_url, ALICE)
        await socket.receive("ready")
        assert (await socket.request("join-conversation", {"conversationId": conversation}))["type"] == "ack"
        sent = await socket.request("send-message", {"conversationId": conversation, "content": words,
                                                     "requiresAIResponse": True})
        assert sent["type"] == "ack", sent

        await socket.receive("ai-delta", timeout=30)
        proxy.cut()  # the reply streams on; storing it finds the database away
        done = await socket.receive("ai-done", timeout=30)
        proxy.restore()

        while True:
            stored = await socket.receive("new-message", timeout=60)
            if stored["data"]["role"] == "assistant":
                break
        assert stored["data"]["id"] == done["data"]["messageId"]
        assert stored["data"]["content"] == "Echo: " + words
        socket.close()
        server.terminate()
        assert await server.wait_exit() == 0
