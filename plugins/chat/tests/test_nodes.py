"""Two real server processes sharing PostgreSQL and Redis behave as one chat server: a
message sent on one node reaches sockets joined on the other, typing (and its expiry) too,
and a join with ``since`` replays the same on either node, also while messages arrive."""

from __future__ import annotations

import asyncio
import os

import pytest

from vachat.testing import needs_shared_services, open_websocket


ALICE = {"Authorization": "Bearer test:alice"}


async def socket_on(server):
    socket = await open_websocket(server.ws_url, ALICE)
    await socket.receive("ready")
    return socket


async def joined(socket, conversation_id, since=None):
    data = {"conversationId": conversation_id, **({"since": since} if since else {})}
    reply = await socket.request("join-conversation", data, timeout=10)
    assert reply["type"] == "ack", reply
    return reply["data"]


async def two_chat_nodes(server_process, **env):
    """Two started nodes with the chat plugin and test authentication, ``env`` added."""
    env = {"VACHAT_PLUGIN_MODULES": "testauth=vachat.testing_auth", "VACHAT_PLUGINS": "chat,testauth", **env}
    first, second = server_process(env), server_process(env)
    await asyncio.gather(first.wait_ready(), second.wait_ready())
    return first, second


@needs_shared_services
@pytest.mark.gen_test(timeout=120)
async def test_two_nodes_share_messages_typing_and_replay(server_process):
    first, second = await two_chat_nodes(server_process, CHAT_TYPING_TIMEOUT="0.3")
    created = await first.fetch("/api/chat/conversations", method="POST", json={"title": "both"}, headers=ALICE)
    assert created.code == 201
    cid = created.data["id"]
    on_first, on_second = await socket_on(first), await socket_on(second)
    await joined(on_first, cid)
    await joined(on_second, cid)

    sent = await on_first.request("send-message", {"conversationId": cid, "content": "from node 1"})
    assert sent["type"] == "ack"
    assert (await on_second.receive("new-message", timeout=10))["data"] == sent["data"]
    assert (await on_first.receive("new-message", timeout=10))["data"] == sent["data"]  # the sender's own room
    posted = await second.fetch("/api/chat/message", method="POST", json={"conversationId": cid, "content": "from node 2"},
                                headers=ALICE)
    assert posted.code == 201
    assert (await on_first.receive("new-message", timeout=10))["data"]["id"] == posted.data["id"]

    assert (await on_first.request("typing-start", {"conversationId": cid}))["type"] == "ack"
    assert (await on_second.receive("user-typing", timeout=10))["data"]["userId"] == "alice"
    # No typing-stop: the first node's timer ends it, and the second node hears that too.
    assert (await on_second.receive("user-stopped-typing", timeout=10))["data"] == {"conversationId": cid, "userId": "alice"}

    # Replay with since on either node, while the first node keeps receiving messages.
    mark = sent["data"]["id"]

    async def keep_sending():
        for n in range(20):
            reply = await on_first.request("send-message", {"conversationId": cid, "content": f"burst {n}"})
            assert reply["type"] == "ack"

    burst = asyncio.ensure_future(keep_sending())
    late_second, late_first = await socket_on(second), await socket_on(first)
    answers = [(late_second, await joined(late_second, cid, since=mark)),
               (late_first, await joined(late_first, cid, since=mark))]
    await burst
    page = await second.fetch(f"/api/chat/conversations/{cid}/messages?limit=200", headers=ALICE)
    every = [m["id"] for m in page.data["items"]][::-1]
    after_mark = every[every.index(mark) + 1:]
    for socket, answer in answers:
        replayed = [m["id"] for m in answer["missed"]]
        live: list[str] = []
        while len(replayed) + len(live) < len(after_mark):
            live.append((await socket.receive("new-message", timeout=10))["data"]["id"])
        assert replayed + live == after_mark
    for server in (first, second):
        server.terminate()
    assert [await first.wait_exit(), await second.wait_exit()] == [0, 0]


@needs_shared_services
@pytest.mark.gen_test(timeout=120)
async def test_a_conversation_made_private_on_one_node_stops_reaching_readers_on_the_other(server_process):
    first, second = await two_chat_nodes(server_process)
    conversations = []
    for title in ("soon private", "stays public"):
        created = await first.fetch("/api/chat/conversations", method="POST", json={"title": title, "isPublic": True},
                                    headers=ALICE)
        assert created.code == 201
        conversations.append(created.data["id"])
    private, public = conversations
    bob = await open_websocket(second.ws_url, {"Authorization": "Bearer test:bob"})
    await bob.receive("ready")
    await joined(bob, private)
    await joined(bob, public)

    changed = await first.fetch(f"/api/chat/conversations/{private}", method="PUT", json={"isPublic": False},
                                headers=ALICE)
    assert changed.code == 200
    for cid, content in ((private, "secret"), (public, "marker")):
        posted = await first.fetch("/api/chat/message", method="POST", json={"conversationId": cid, "content": content},
                                   headers=ALICE)
        assert posted.code == 201
    # Publications reach the other node in the order they were made: once the marker is
    # there, the secret would have been too.
    assert (await bob.receive("new-message", timeout=10))["data"]["content"] == "marker"
    assert [f for f in bob.frames if f["type"] == "new-message"] == []


@needs_shared_services
@pytest.mark.gen_test(timeout=120)
async def test_a_conversation_deleted_on_one_node_is_told_to_its_readers_on_the_other(server_process):
    first, second = await two_chat_nodes(server_process)
    created = await first.fetch("/api/chat/conversations", method="POST", json={"title": "doomed", "isPublic": True},
                                headers=ALICE)
    assert created.code == 201
    cid = created.data["id"]
    bob = await open_websocket(second.ws_url, {"Authorization": "Bearer test:bob"})
    await bob.receive("ready")
    await joined(bob, cid)
    owner = await socket_on(second)
    await joined(owner, cid)

    assert (await first.fetch(f"/api/chat/conversations/{cid}", method="DELETE", headers=ALICE)).code == 200
    for socket in (bob, owner):
        assert (await socket.receive("conversation-deleted", timeout=10))["data"] == {"conversationId": cid}
    # Each socket is told once: the owner's in the owner's room, bob's on his own socket.
    marker = await first.fetch("/api/chat/conversations", method="POST", json={"title": "marker"}, headers=ALICE)
    assert (await owner.receive("conversation-created", timeout=10))["data"]["id"] == marker.data["id"]
    for socket in (bob, owner):
        assert (await socket.request("ping"))["type"] == "pong"
        assert [f for f in socket.frames if f["type"] == "conversation-deleted"] == []


@needs_shared_services
@pytest.mark.gen_test(timeout=120)
async def test_typing_on_a_node_that_dies_still_ends_on_the_other(server_process):
    dying, surviving = await two_chat_nodes(server_process, CHAT_TYPING_TIMEOUT="0.5")
    created = await surviving.fetch("/api/chat/conversations", method="POST", json={"title": "t"}, headers=ALICE)
    cid = created.data["id"]
    typist, watcher = await socket_on(dying), await socket_on(surviving)
    await joined(typist, cid)
    await joined(watcher, cid)

    assert (await typist.request("typing-start", {"conversationId": cid}))["type"] == "ack"
    assert (await watcher.receive("user-typing", timeout=10))["data"]["userId"] == "alice"
    dying.kill()  # SIGKILL: its own timer never fires, nothing it held is published
    assert (await watcher.receive("user-stopped-typing", timeout=10))["data"] == {"conversationId": cid, "userId": "alice"}
