"""The chat WebSocket events through the real server: joins with replay, live events from
REST and socket writes alike, typing and its expiry, ownership on every event, limits."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest

from vachat.plugin_api import json_dumps
from vachat.testing import client_frame, parse_frames, raw_upgrade

from .helpers import ALICE, BOB, CAROL, MISSING_ID, READ_ALL, connect, create_conversation, join, send

SHORT_TYPING = {"plugin_sections": {"chat": {"typing_timeout": 0.2, "max_joined_conversations": 3}}}


@pytest.mark.gen_test
async def test_join_without_since_then_live_events_from_rest_and_socket(fetch, ws_connect):
    conversation = await create_conversation(fetch)
    cid = conversation["id"]
    alice = await connect(ws_connect)
    answer = await join(alice, cid)
    assert answer == {"conversationId": cid, "missed": [], "hasMore": False, "generation": None,
                      "seq": 0}
    posted = (await send(fetch, cid, "over rest"))["data"]
    assert (await alice.receive("new-message"))["data"] == posted
    acked = await alice.request("send-message", {"conversationId": cid, "content": "over socket", "clientMessageId": "s1"})
    assert acked["type"] == "ack" and acked["data"]["content"] == "over socket"
    assert (await alice.receive("new-message"))["data"] == acked["data"]
    retry = await alice.request("send-message", {"conversationId": cid, "content": "over socket", "clientMessageId": "s1"})
    assert retry["data"] == acked["data"]
    conflict = await alice.request("send-message", {"conversationId": cid, "content": "else", "clientMessageId": "s1"})
    assert conflict["type"] == "error" and conflict["data"]["code"] == "CONFLICT"
    edited = await fetch(f"/api/chat/messages/{posted['id']}", method="PUT", json={"content": "edited"}, user=ALICE)
    assert (await alice.receive("message-updated"))["data"] == edited.data
    await fetch(f"/api/chat/messages/{posted['id']}", method="DELETE", user=ALICE)
    assert (await alice.receive("message-deleted"))["data"] == {"conversationId": cid, "messageId": posted["id"], "seq": 4}
    # Each change took the conversation's next seq, in the order they were made.
    assert [posted["seq"], acked["data"]["seq"], edited.data["seq"]] == [1, 2, 3]
    # No second new-message for the retry: the next frame is the ping's answer.
    assert (await alice.request("ping"))["type"] == "pong"
    assert [f["type"] for f in alice.frames] == []


@pytest.mark.gen_test
async def test_join_without_an_id_gets_a_joined_conversation_event(fetch, ws_connect):
    conversation = await create_conversation(fetch)
    alice = await connect(ws_connect)
    alice.send("join-conversation", {"conversationId": conversation["id"]})
    event = await alice.receive("joined-conversation")
    assert event["data"] == {"conversationId": conversation["id"], "missed": [], "hasMore": False,
                             "generation": None, "seq": 0}


@pytest.mark.gen_test
async def test_conversation_events_reach_every_device_of_the_owner(fetch, ws_connect):
    phone, laptop = await connect(ws_connect), await connect(ws_connect)
    bob = await connect(ws_connect, BOB)
    created = await create_conversation(fetch, title="new")
    for device in (phone, laptop):
        assert (await device.receive("conversation-created"))["data"] == created
    updated = await fetch(f"/api/chat/conversations/{created['id']}", method="PUT", json={"title": "renamed"}, user=ALICE)
    for device in (phone, laptop):
        assert (await device.receive("conversation-updated"))["data"] == updated.data
    await fetch(f"/api/chat/conversations/{created['id']}", method="DELETE", user=ALICE)
    for device in (phone, laptop):
        assert (await device.receive("conversation-deleted"))["data"] == {"conversationId": created["id"]}
    # new-message is never sent to user rooms; bob heard nothing.
    assert (await bob.request("ping"))["type"] == "pong" and bob.frames == []


@pytest.mark.gen_test
async def test_replay_since_with_edits_and_deletes(fetch, ws_connect):
    conversation = await create_conversation(fetch)
    cid = conversation["id"]
    seen = [(await send(fetch, cid, f"seen {n}"))["data"] for n in range(3)]
    await fetch(f"/api/chat/messages/{seen[0]['id']}", method="PUT", json={"content": "seen 0, edited"}, user=ALICE)
    await fetch(f"/api/chat/messages/{seen[1]['id']}", method="DELETE", user=ALICE)
    new = [(await send(fetch, cid, f"new {n}"))["data"] for n in range(3)]
    await fetch(f"/api/chat/messages/{new[2]['id']}", method="DELETE", user=ALICE)
    alice = await connect(ws_connect)
    answer = await join(alice, cid, since=seen[2]["id"])
    assert [m["content"] for m in answer["missed"]] == ["seen 0, edited", "new 0", "new 1"]
    assert sorted(answer["deleted"]) == sorted([seen[1]["id"], new[2]["id"]])
    assert answer["hasMore"] is False and answer["generation"] is None
    bob = await connect(ws_connect, BOB)
    refused = await bob.request("join-conversation", {"conversationId": cid, "since": seen[0]["id"]})
    assert refused["type"] == "error" and refused["data"]["code"] == "NOT_FOUND"
    other = await create_conversation(fetch)
    foreign = await alice.request("join-conversation", {"conversationId": other["id"], "since": seen[0]["id"]})
    assert foreign["type"] == "error" and foreign["data"]["code"] == "NOT_FOUND"


@pytest.mark.gen_test
async def test_replay_since_seq_and_the_changes_a_node_reads_back(app, fetch, ws_connect):
    conversation = await create_conversation(fetch)
    cid = conversation["id"]
    seen = [(await send(fetch, cid, f"seen {n}"))["data"] for n in range(3)]  # seq 1, 2, 3
    alice = await connect(ws_connect)
    mark = (await join(alice, cid))["seq"]
    assert mark == 3 and [m["seq"] for m in seen] == [1, 2, 3]
    edited = await fetch(f"/api/chat/messages/{seen[0]['id']}", method="PUT", json={"content": "seen 0, edited"},
                         user=ALICE)  # seq 4
    await fetch(f"/api/chat/messages/{seen[1]['id']}", method="DELETE", user=ALICE)  # 5
    new = [(await send(fetch, cid, f"new {n}"))["data"] for n in range(2)]  # 6, 7
    await fetch(f"/api/chat/messages/{new[0]['id']}", method="PUT", json={"content": "new 0, edited"},
                user=ALICE)  # 8: new 0 is told once, as it is now
    again = await connect(ws_connect)
    answer = (await again.request("join-conversation", {"conversationId": cid, "sinceSeq": mark}))["data"]
    assert [m["content"] for m in answer["missed"]] == ["seen 0, edited", "new 0, edited", "new 1"]
    assert answer["deleted"] == [seen[1]["id"]] and answer["seq"] == 8 and answer["hasMore"] is False
    assert (await join(again, cid))["missed"] == []  # neither since nor sinceSeq: nothing missed
    both = await again.request("join-conversation", {"conversationId": cid, "since": seen[0]["id"], "sinceSeq": 1})
    assert both["type"] == "error" and both["data"]["code"] == "VALIDATION_FAILED"
    # What a node reads back after seq 3: each change once, in seq order, as a frame.
    frames, upto = await app.service("chat").changes_after(cid, mark)
    assert upto == 8
    assert [(seq, kind) for seq, kind, _ in frames] == [
        (4, "message-updated"), (5, "message-deleted"), (7, "new-message"), (8, "new-message")]
    assert json.loads(json_dumps(frames[0][2])) == edited.data  # the frame message-updated carried
    assert frames[1][2] == {"conversationId": cid, "messageId": seen[1]["id"], "seq": 5}
    assert [data["content"] for _, _, data in frames[2:]] == ["new 1", "new 0, edited"]
    assert await app.service("chat").changes_after(cid, 8) == ([], 8)


@pytest.mark.gen_test
async def test_replay_caps_at_200_and_says_there_is_more(app, fetch, ws_connect):
    conversation = await create_conversation(fetch)
    cid = conversation["id"]
    mark = (await send(fetch, cid, "mark"))["data"]
    chat = app.service("chat")
    for n in range(205):
        await chat.store_assistant_message(cid, f"reply {n}")
    alice = await connect(ws_connect)
    answer = await join(alice, cid, since=mark["id"])
    assert len(answer["missed"]) == 200 and answer["hasMore"] is True
    assert answer["missed"][0]["content"] == "reply 0" and answer["missed"][-1]["content"] == "reply 199"
    assert all(m["role"] == "assistant" and m["userId"] is None for m in answer["missed"])


@pytest.mark.gen_test(timeout=60)
async def test_replay_while_messages_arrive_has_no_gap_and_no_duplicate(fetch, ws_connect):
    conversation = await create_conversation(fetch)
    cid = conversation["id"]
    mark = (await send(fetch, cid, "mark"))["data"]
    for n in range(20):
        await send(fetch, cid, f"before {n}")
    writer = await connect(ws_connect)
    total = 60
    sent: list[str] = []

    async def keep_sending():
        for n in range(total):
            reply = await writer.request("send-message", {"conversationId": cid, "content": f"during {n}"})
            assert reply["type"] == "ack", reply
            sent.append(reply["data"]["id"])

    sender = asyncio.ensure_future(keep_sending())
    readers = []
    while not sender.done():
        reader = await connect(ws_connect)
        answer = await join(reader, cid, since=mark["id"])
        readers.append((reader, answer))
        await asyncio.sleep(0)
    await sender
    every = [m["id"] for m in (await fetch(f"/api/chat/conversations/{cid}/messages?limit=200", user=ALICE)).data["items"]][::-1]
    assert len(readers) >= 2
    for reader, answer in readers:
        replayed = [m["id"] for m in answer["missed"]]
        # Everything after the replay arrives live, in order, exactly once.
        expected_live = every[every.index(replayed[-1]) + 1:]
        live: list[str] = []
        while len(live) < len(expected_live):
            live.append((await reader.receive("new-message"))["data"]["id"])
        assert replayed + live == every[1:]
        assert (await reader.request("ping"))["type"] == "pong"
        assert not [f for f in reader.frames if f["type"] == "new-message"]


@pytest.mark.gen_test
async def test_ack_comes_before_held_live_frames(app, fetch, ws_connect, monkeypatch):
    """A message stored while the join reads its replay is delivered after the ack, once."""
    conversation = await create_conversation(fetch)
    cid = conversation["id"]
    mark = (await send(fetch, cid, "mark"))["data"]
    chat = app.service("chat")
    original = chat.replay
    stored: list[dict] = []

    async def replay_with_a_message_arriving(actor, conversation_id, since, since_seq=None):
        stored.append(await chat.store_assistant_message(conversation_id, "arrived during the join"))
        return await original(actor, conversation_id, since, since_seq)

    monkeypatch.setattr(chat, "replay", replay_with_a_message_arriving)
    alice = await connect(ws_connect)
    alice.send("join-conversation", {"conversationId": cid, "since": mark["id"]}, id="j")
    first = await alice.receive()
    assert first["type"] == "ack" and [m["id"] for m in first["data"]["missed"]] == [stored[0]["id"]]
    monkeypatch.setattr(chat, "replay", original)
    later = await chat.store_assistant_message(cid, "after the join")
    assert (await alice.receive())["data"]["id"] == later["id"]  # the held duplicate was dropped


@pytest.mark.gen_test
async def test_other_users_conversations_are_closed_on_every_event(fetch, ws_connect):
    private = await create_conversation(fetch)
    public = await create_conversation(fetch, isPublic=True)
    bob = await connect(ws_connect, BOB)
    for event, data in [
        ("join-conversation", {"conversationId": private["id"]}),
        ("join-conversation", {"conversationId": MISSING_ID}),
        ("send-message", {"conversationId": private["id"], "content": "intrude"}),
        ("send-message", {"conversationId": MISSING_ID, "content": "intrude"}),
    ]:
        reply = await bob.request(event, data)
        assert reply["type"] == "error" and reply["data"]["code"] == "NOT_FOUND", (event, reply)
    for event in ("typing-start", "typing-stop"):
        reply = await bob.request(event, {"conversationId": private["id"]})
        assert reply["type"] == "error" and reply["data"]["code"] == "FORBIDDEN"
    # Public: bob may join and read, not write or type.
    await join(bob, public["id"])
    for event, data in [("send-message", {"conversationId": public["id"], "content": "me too"}),
                        ("typing-start", {"conversationId": public["id"]})]:
        reply = await bob.request(event, data)
        assert reply["type"] == "error" and reply["data"]["code"] == "FORBIDDEN"
    posted = (await send(fetch, private["id"], "not for bob"))["data"]
    public_post = (await send(fetch, public["id"], "for everyone"))["data"]
    assert (await bob.receive("new-message"))["data"]["id"] == public_post["id"]
    assert (await bob.request("ping"))["type"] == "pong"
    assert not [f for f in bob.frames if posted["id"] in json.dumps(f)]
    # read_all: joins any conversation to read it.
    auditor = await connect(ws_connect, "carol", headers=READ_ALL)
    assert (await join(auditor, private["id"]))["conversationId"] == private["id"]


@pytest.mark.gen_test
async def test_bad_event_data_gets_validation_errors(ws_connect):
    alice = await connect(ws_connect)
    for event, data in [
        ("join-conversation", {}),
        ("join-conversation", {"conversationId": 5}),
        ("join-conversation", {"conversationId": "x" * 5000}),
        ("join-conversation", {"conversationId": MISSING_ID, "since": "bad"}),
        ("leave-conversation", {}),
        ("send-message", {"conversationId": MISSING_ID}),
        ("send-message", {"conversationId": MISSING_ID, "content": "x" * 32001}),
        ("typing-start", {"conversationId": MISSING_ID, "extra": True}),
    ]:
        reply = await alice.request(event, data)
        assert reply["type"] == "error" and reply["data"]["code"] == "VALIDATION_FAILED", (event, reply)


@pytest.mark.gen_test
@pytest.mark.vachat(config=SHORT_TYPING)
async def test_typing_start_stop_and_expiry(fetch, ws_connect):
    conversation = await create_conversation(fetch)
    cid = conversation["id"]
    alice, watcher = await connect(ws_connect), await connect(ws_connect)
    await join(alice, cid)
    await join(watcher, cid)
    assert (await alice.request("typing-start", {"conversationId": cid}))["data"] == {"conversationId": cid, "typing": True}
    assert (await watcher.receive("user-typing"))["data"] == {"conversationId": cid, "userId": ALICE, "userName": "Alice"}
    assert (await alice.request("typing-stop", {"conversationId": cid}))["type"] == "ack"
    assert (await watcher.receive("user-stopped-typing"))["data"] == {"conversationId": cid, "userId": ALICE}
    # No typing-stop: it ends on its own after typing_timeout.
    await alice.request("typing-start", {"conversationId": cid})
    await watcher.receive("user-typing")
    assert (await watcher.receive("user-stopped-typing", timeout=5))["data"] == {"conversationId": cid, "userId": ALICE}
    assert not [f for f in alice.frames if f["type"] == "user-typing"]  # the typist is not told


@pytest.mark.gen_test
@pytest.mark.vachat(config=SHORT_TYPING)
async def test_joined_conversations_per_socket_are_capped_and_leave_frees_one(fetch, ws_connect):
    conversations = [await create_conversation(fetch, title=f"c{n}") for n in range(4)]
    alice = await connect(ws_connect)
    for conversation in conversations[:3]:
        await join(alice, conversation["id"])
    await join(alice, conversations[0]["id"])  # joining again is not one more
    refused = await alice.request("join-conversation", {"conversationId": conversations[3]["id"]})
    assert refused["type"] == "error" and refused["data"]["code"] == "VALIDATION_FAILED"
    left = await alice.request("leave-conversation", {"conversationId": conversations[0]["id"]})
    assert left["data"] == {"conversationId": conversations[0]["id"]}
    await join(alice, conversations[3]["id"])
    await send(fetch, conversations[0]["id"], "not heard")
    heard = (await send(fetch, conversations[3]["id"], "heard"))["data"]
    assert (await alice.receive("new-message"))["data"]["id"] == heard["id"]


@pytest.mark.gen_test
@pytest.mark.vachat(config=SHORT_TYPING)
async def test_a_deleted_conversation_is_told_once_to_every_socket_and_frees_its_join_slot(fetch, ws_connect):
    doomed, *others = [await create_conversation(fetch, title=f"c{n}", isPublic=True) for n in range(4)]
    joined_device, other_device = await connect(ws_connect), await connect(ws_connect)
    bob = await connect(ws_connect, BOB)
    auditor = await connect(ws_connect, CAROL, headers=READ_ALL)
    for conversation in (doomed, *others[:2]):  # bob's three join slots, all taken
        await join(bob, conversation["id"])
    await join(joined_device, doomed["id"])
    await join(auditor, doomed["id"])

    assert (await fetch(f"/api/chat/conversations/{doomed['id']}", method="DELETE", user=ALICE)).code == 200
    for socket in (joined_device, other_device, bob, auditor):
        assert (await socket.receive("conversation-deleted"))["data"] == {"conversationId": doomed["id"]}
        assert (await socket.request("ping"))["type"] == "pong"  # a second one would have come before this
        assert [f for f in socket.frames if f["type"] == "conversation-deleted"] == []
    # Bob's socket left the room: the slot it held takes another conversation.
    await join(bob, others[2]["id"])


@pytest.mark.gen_test
async def test_readers_of_a_deleted_accounts_conversations_are_told(app, fetch, ws_connect):
    conversation = await create_conversation(fetch, isPublic=True)
    bob = await connect(ws_connect, BOB)
    await join(bob, conversation["id"])
    await app.hooks.vachat_user_deleting(user_id=ALICE)
    assert (await bob.receive("conversation-deleted"))["data"] == {"conversationId": conversation["id"]}
    refused = await bob.request("join-conversation", {"conversationId": conversation["id"]})
    assert refused["type"] == "error" and refused["data"]["code"] == "NOT_FOUND"


@pytest.mark.gen_test
@pytest.mark.vachat(config={"ws_outbound_limit": 64 * 1024})
async def test_a_slow_consumer_of_a_conversation_is_closed_4408(app, fetch, http_port):
    conversation = await create_conversation(fetch)
    sock, received = await raw_upgrade(http_port, {"Authorization": "Bearer test:alice"}, rcvbuf=4096)
    loop = asyncio.get_running_loop()
    try:
        join_frame = json.dumps({"type": "join-conversation", "id": "j", "data": {"conversationId": conversation["id"]}})
        await loop.sock_sendall(sock, client_frame(0x1, join_frame.encode()))
        while app.hub.room_size(f"conversation:{conversation['id']}") == 0:
            await asyncio.sleep(0.01)
        [conn] = app.hub.connections_of(ALICE)
        chat = app.service("chat")
        sent = 0
        while not conn.is_closing:  # the client reads nothing meanwhile
            await chat.store_assistant_message(conversation["id"], "p" * 8000)
            sent += 1
            assert sent < 2000, "never closed"
        data, close_frame = bytearray(received), None
        while close_frame is None:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 5)
            assert chunk, "connection dropped before the close frame"
            data.extend(chunk)
            frames, rest = parse_frames(data)
            data = bytearray(rest)
            close_frame = next((payload for opcode, payload in frames if opcode == 0x8), None)
        assert struct.unpack("!H", close_frame[:2])[0] == 4408
    finally:
        sock.close()


@pytest.mark.gen_test
async def test_readers_of_a_conversation_made_private_stop_receiving_it_at_once(fetch, ws_connect):
    conversation = await create_conversation(fetch, isPublic=True)
    cid = conversation["id"]
    alice, bob = await connect(ws_connect), await connect(ws_connect, BOB)
    await join(alice, cid)
    await join(bob, cid)
    await send(fetch, cid, "while public")
    assert (await bob.receive("new-message"))["data"]["content"] == "while public"
    made_private = await fetch(f"/api/chat/conversations/{cid}", method="PUT", json={"isPublic": False}, user=ALICE)
    assert made_private.code == 200 and made_private.data["isPublic"] is False
    await send(fetch, cid, "now private")
    # The owner's socket stays in the room; bob's was taken out, without leaving by itself.
    assert [(await alice.receive("new-message"))["data"]["content"] for _ in range(2)] == ["while public", "now private"]
    assert (await bob.request("ping"))["type"] == "pong"  # anything sent to the room came before this
    assert [f for f in bob.frames if f["type"] == "new-message"] == []
    refused = await bob.request("join-conversation", {"conversationId": cid})
    assert refused["type"] == "error" and refused["data"]["code"] == "NOT_FOUND"
