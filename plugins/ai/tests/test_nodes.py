"""The assistant on real server processes: a reply resumed on another node (PostgreSQL + Redis)
with no gap and no repeat, the one-reply rule and stop-generation across nodes, and a reply
running when SIGTERM arrives stored before the process exits."""

from __future__ import annotations

import asyncio
import os

import pytest

from vachat.testing import needs_shared_services, open_websocket


ALICE = {"Authorization": "Bearer test:alice"}
LONG_TEXT = " ".join(f"word{n}" for n in range(40))
ENV = {"VACHAT_PLUGIN_MODULES": "testauth=vachat.testing_auth", "VACHAT_PLUGINS": "chat,ai,testauth",
       "AI_PROVIDER": "echo"}


async def socket_on(server):
    socket = await open_websocket(server.ws_url, ALICE)
    await socket.receive("ready")
    return socket


async def joined(socket, conversation_id):
    reply = await socket.request("join-conversation", {"conversationId": conversation_id}, timeout=10)
    assert reply["type"] == "ack", reply
    return reply["data"]


async def ask(server, conversation_id, content=LONG_TEXT, expect=201):
    response = await server.fetch("/api/chat/message", method="POST", headers=ALICE, json={
        "conversationId": conversation_id, "content": content, "requiresAIResponse": True})
    assert response.code == expect, response.body
    return response


async def until_done(socket):
    frames = []
    while True:
        frame = await socket.receive(timeout=20)
        if frame["type"] in ("ai-delta", "ai-done") or (frame["type"] == "new-message" and frame["data"]["role"] == "assistant"):
            frames.append(frame)
        if frame["type"] == "ai-typing" and frame["data"]["typing"] is False:
            return frames


@needs_shared_services
@pytest.mark.gen_test(timeout=120)
async def test_a_reply_resumes_on_another_node_and_stops_from_it(server_process):
    env = {**ENV, "AI_ECHO_DELAY": "0.05"}
    first, second = server_process(env), server_process(env)
    await asyncio.gather(first.wait_ready(), second.wait_ready())
    created = await first.fetch("/api/chat/conversations", method="POST", json={"title": "two nodes"}, headers=ALICE)
    cid = created.data["id"]
    on_first = await socket_on(first)
    await joined(on_first, cid)
    await ask(first, cid)
    for _ in range(3):
        await on_first.receive("ai-delta", timeout=10)

    on_second = await socket_on(second)
    generation = (await joined(on_second, cid))["generation"]
    assert generation is not None and generation["index"] >= 2 and generation["text"].startswith("Echo: ")
    await ask(second, cid, "not now", expect=409)  # one reply at a time, whichever node is asked
    rest = await until_done(on_second)
    deltas = [f["data"] for f in rest if f["type"] == "ai-delta"]
    stored = rest[-1]["data"]
    assert stored["id"] == generation["messageId"]
    assert [d["index"] for d in deltas] == list(range(generation["index"] + 1, generation["index"] + 1 + len(deltas)))
    assert generation["text"] + "".join(d["delta"] for d in deltas) == stored["content"] == "Echo: " + LONG_TEXT
    first_frames = await until_done(on_first)
    assert first_frames[-1]["data"] == stored

    # A reply generated on the first node, stopped from a socket on the second.
    await ask(first, cid)
    await on_first.receive("ai-delta", timeout=10)
    stopped = await on_second.request("stop-generation", {"conversationId": cid}, timeout=10)
    assert stopped["data"]["stopped"] is True
    done = [f for f in await until_done(on_first) if f["type"] == "ai-done"]
    assert done[0]["data"]["finishReason"] == "cancelled"
    page = await second.fetch(f"/api/chat/conversations/{cid}/messages", headers=ALICE)
    latest = page.data["items"][0]
    assert latest["metadata"]["finishReason"] == "cancelled" and len(latest["content"]) < len("Echo: " + LONG_TEXT)
    assert (await on_second.request("stop-generation", {"conversationId": cid}))["data"]["stopped"] is False


@pytest.mark.gen_test(timeout=120)
async def test_a_reply_running_at_sigterm_is_stored_before_exit(server_process):
    env = {**ENV, "AI_ECHO_DELAY": "0.3"}
    server = server_process(env)
    await server.wait_ready()
    cid = (await server.fetch("/api/chat/conversations", method="POST", json={}, headers=ALICE)).data["id"]
    socket = await socket_on(server)
    await joined(socket, cid)
    await ask(server, cid)
    await socket.receive("ai-delta", timeout=10)
    server.terminate()
    assert await server.wait_exit() == 0
    after = server_process(env)
    await after.wait_ready()
    page = await after.fetch(f"/api/chat/conversations/{cid}/messages", headers=ALICE)
    reply = page.data["items"][0]
    assert reply["role"] == "assistant" and reply["metadata"]["finishReason"] == "shutdown"
    assert reply["content"].startswith("Echo: ") and len(reply["content"]) < len("Echo: " + LONG_TEXT)
