"""The hooks chat offers and the service it publishes, as other plugins use them; account
deletion; and the plugin boundary (chat imports nothing of vachat but the plugin API)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from vachat.plugin_api import NotFound, Forbidden, Actor, json_dumps
from vachat.testing import assert_error

from . import hooked_plugin
from .helpers import ALICE, BOB, connect, create_conversation, join, send

WITH_HOOKS = pytest.mark.vachat(plugins=["chat", ("hooked", hooked_plugin)])


@pytest.fixture(autouse=True)
def fresh_records():
    hooked_plugin.reset()
    yield
    hooked_plugin.reset()


def recorded(kind: str) -> list:
    return [value for name, value in hooked_plugin.calls if name == kind]


@pytest.mark.gen_test
@WITH_HOOKS
async def test_before_store_may_refuse_and_nothing_is_stored(fetch):
    conversation = await create_conversation(fetch)
    refused = await fetch("/api/chat/message", method="POST", user=ALICE,
                          json={"conversationId": conversation["id"], "content": "over quota please"})
    assert_error(refused, 429, "QUOTA_EXCEEDED")
    assert (await fetch(f"/api/chat/conversations/{conversation['id']}", user=ALICE)).data["messageCount"] == 0
    stored = (await send(fetch, conversation["id"], "fine", files=["f1", "f2"]))["data"]
    assert recorded("before_store")[-1]["files"] == ["f1", "f2"]
    assert recorded("created") == [(conversation["id"], stored["id"], ALICE)]


@pytest.mark.gen_test
@WITH_HOOKS
async def test_hooks_see_the_conversation_as_the_api_shows_it(fetch):
    """The send path reads conversations without the ORM (listing.conversations_by_id): what
    the hooks get must be what a read answers, field for field (tags and lastMessage aside)."""
    conversation = await create_conversation(fetch, description="notes", metadata={"colour": "blue", "n": 2},
                                             isPublic=True)
    first = (await send(fetch, conversation["id"], "one"))["data"]
    await send(fetch, conversation["id"], "two")
    read = (await fetch(f"/api/chat/conversations/{conversation['id']}", user=ALICE)).data
    seen = json.loads(json_dumps(recorded("before_store_conversation")[-1]))  # as the wire writes it
    assert seen["currentMessageId"] == first["id"] and seen["messageCount"] == 1  # read before the second
    for field in ("currentMessageId", "messageCount", "updatedAt", "tags", "lastMessage"):
        read.pop(field), seen.pop(field)
    assert seen == read


@pytest.mark.gen_test
@WITH_HOOKS
async def test_decorate_runs_once_per_batch_everywhere_messages_leave(fetch, ws_connect):
    conversation = await create_conversation(fetch)
    alice = await connect(ws_connect)
    await join(alice, conversation["id"])
    sent = (await send(fetch, conversation["id"], "with files", files=["a", "b"]))["data"]
    assert sent["files"] == [{"id": "a", "name": "a.txt"}, {"id": "b", "name": "b.txt"}]
    assert (await alice.receive("new-message"))["data"]["files"] == sent["files"]
    for n in range(4):
        await send(fetch, conversation["id"], f"more {n}", files=[f"x{n}"])
    hooked_plugin.calls.clear()
    page = (await fetch(f"/api/chat/conversations/{conversation['id']}/messages", user=ALICE)).data
    assert all(m["files"][0]["name"].endswith(".txt") for m in page["items"])
    assert recorded("decorate") == [5]  # the whole page at once
    listed = (await fetch("/api/chat/conversations", user=ALICE)).data
    assert listed[0]["lastMessage"]["files"] == [{"id": "x3", "name": "x3.txt"}]
    replay = await join(await connect(ws_connect), conversation["id"], since=sent["id"])
    assert [m["files"][0]["name"] for m in replay["missed"]] == [f"x{n}.txt" for n in range(4)]


@pytest.mark.gen_test
@WITH_HOOKS
async def test_update_delete_and_conversation_deleted_hooks(fetch):
    conversation = await create_conversation(fetch)
    message = (await send(fetch, conversation["id"], "draft", files=["f9"]))["data"]
    await fetch(f"/api/chat/messages/{message['id']}", method="PUT", json={"content": "final"}, user=ALICE)
    await fetch(f"/api/chat/messages/{message['id']}", method="DELETE", user=ALICE)
    await fetch(f"/api/chat/conversations/{conversation['id']}", method="DELETE", user=ALICE)
    assert recorded("updated") == ["final"]
    assert recorded("deleted") == [(message["id"], ["f9"])]
    assert recorded("conversation_deleted") == [conversation["id"]]


@pytest.mark.gen_test
@WITH_HOOKS
async def test_an_ai_plugin_answers_through_the_service(fetch, ws_connect):
    conversation = await create_conversation(fetch)
    alice = await connect(ws_connect)
    await join(alice, conversation["id"])
    await send(fetch, conversation["id"], "earlier")
    asked = (await send(fetch, conversation["id"], "question?", requiresAIResponse=True))["data"]
    assert (await alice.receive("new-message"))["data"]["content"] == "earlier"
    assert (await alice.receive("new-message"))["data"]["id"] == asked["id"]
    reply = (await alice.receive("new-message"))["data"]
    assert reply["role"] == "assistant" and reply["userId"] is None and reply["content"] == "echo: question?"
    assert reply["parentId"] == asked["id"] and reply["metadata"] == {"model": "test"}
    assert recorded("ai_requested") == [["earlier", "question?"]]
    current = (await fetch(f"/api/chat/conversations/{conversation['id']}", user=ALICE)).data
    assert current["currentMessageId"] == reply["id"]
    # A retry of the same clientMessageId never asks twice.
    await send(fetch, conversation["id"], "again", clientMessageId="q2", requiresAIResponse=True)
    await send(fetch, conversation["id"], "again", clientMessageId="q2", requiresAIResponse=True, expect=200)
    assert len(recorded("ai_requested")) == 2


@pytest.mark.gen_test
@WITH_HOOKS
async def test_join_carries_the_generation_and_drops_the_deltas_it_covers(app, fetch, ws_connect, monkeypatch):
    conversation = await create_conversation(fetch)
    cid, reply_id = conversation["id"], "01ARZ3NDEKTSV4RRFFQ69G5FAX"
    chat = app.service("chat")
    original = chat.replay

    async def replay_while_streaming(actor, conversation_id, since, since_seq=None):
        for index, delta in enumerate(["Hel", "lo", " wor", "ld"]):
            await app.publish(f"conversation:{cid}", "ai-delta",
                              {"conversationId": cid, "messageId": reply_id, "index": index, "delta": delta})
        hooked_plugin.generations[cid] = {"messageId": reply_id, "text": "Hello wor", "index": 2}
        return await original(actor, conversation_id, since, since_seq)

    monkeypatch.setattr(chat, "replay", replay_while_streaming)
    alice = await connect(ws_connect)
    alice.send("join-conversation", {"conversationId": cid}, id="j")
    ack = await alice.receive()
    assert ack["type"] == "ack" and ack["data"]["generation"] == {"messageId": reply_id, "text": "Hello wor", "index": 2}
    delta = await alice.receive()
    assert delta["type"] == "ai-delta" and delta["data"]["index"] == 3 and delta["data"]["delta"] == "ld"


@pytest.mark.gen_test
async def test_history_walks_the_current_branch_within_the_budget(app, fetch):
    conversation = await create_conversation(fetch)
    cid = conversation["id"]
    chat = app.service("chat")
    root = (await send(fetch, cid, "root message"))["data"]
    first = await chat.store_assistant_message(cid, "first answer")
    await chat.store_assistant_message(cid, "second answer", parent_id=root["id"])  # a regenerate: a sibling
    follow = (await send(fetch, cid, "follow-up"))["data"]
    assert [m["content"] for m in await chat.history(cid, budget=10_000)] == ["root message", "second answer", "follow-up"]
    assert [m["content"] for m in await chat.history(cid, budget=25)] == ["second answer", "follow-up"]
    assert [m["content"] for m in await chat.history(cid, budget=1)] == ["follow-up"]
    assert [m["content"] for m in await chat.history(cid, budget=10_000, leaf_id=first["id"])] == ["root message", "first answer"]
    tokens = await chat.history(cid, budget=4, cost=lambda m: -(-len(m["content"]) // 4))
    assert [m["content"] for m in tokens] == ["follow-up"] and follow["id"] == tokens[0]["id"]
    updated = await chat.update_message(first["id"], content="first answer, final", metadata={"finishReason": "stop"})
    assert updated["isEdited"] is False and updated["metadata"] == {"finishReason": "stop"}
    error = await chat.store_assistant_message(cid, "The provider timed out", type="error")
    assert error["type"] == "error" and error["role"] == "assistant"


@pytest.mark.gen_test
async def test_check_access_and_file_readers(app, fetch):
    chat = app.service("chat")
    private = await create_conversation(fetch)
    public = await create_conversation(fetch, isPublic=True)
    await send(fetch, private["id"], "private file", files=["secret-file"])
    await send(fetch, public["id"], "public file", files=["shared-file"])
    alice, bob = Actor(id=ALICE), Actor(id=BOB)
    assert (await chat.check_access(alice, private["id"], write=True))["id"] == private["id"]
    with pytest.raises(NotFound):
        await chat.check_access(bob, private["id"])
    with pytest.raises(Forbidden):
        await chat.check_access(bob, public["id"], write=True)
    assert await chat.can_read_file(alice, "secret-file") and not await chat.can_read_file(bob, "secret-file")
    assert await chat.can_read_file(bob, "shared-file")
    assert not await chat.can_read_file(alice, "never-attached")


@pytest.mark.gen_test
async def test_deleting_a_user_removes_their_conversations_and_messages(app, fetch):
    mine = await create_conversation(fetch)
    await send(fetch, mine["id"], "remember this")
    theirs = await create_conversation(fetch, user=BOB)
    await send(fetch, theirs["id"], "remember this", user=BOB)
    for _ in range(2):  # idempotent
        await app.hooks.vachat_user_deleting(user_id=ALICE)
    assert (await fetch("/api/chat/conversations", user=ALICE)).data == []
    assert (await fetch("/api/chat/search?q=remember", user=ALICE)).data["items"] == []
    assert [m["content"] for m in (await fetch("/api/chat/search?q=remember", user=BOB)).data["items"]] == ["remember this"]


def test_chat_imports_nothing_of_vachat_but_the_plugin_api():
    package = Path(__file__).resolve().parents[1]
    allowed = {"vachat.plugin_api", "vachat.testing"}
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        in_tests = "tests" in path.relative_to(package).parts
        for node in ast.walk(tree):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for name in names:
                if name == "vachat" or name.startswith("vachat."):
                    assert name in (allowed if in_tests else {"vachat.plugin_api"}), f"{path}: imports {name}"


@pytest.mark.gen_test
@WITH_HOOKS
async def test_a_join_under_way_when_the_conversation_is_made_private_fails(app, fetch, ws_connect):
    """The conversation is made private after the join's replay was read but before it
    answered: the socket is taken out with the other readers and told NOT_FOUND."""
    conversation = await create_conversation(fetch, isPublic=True)
    cid = conversation["id"]

    async def make_private(app, conversation_id):
        await app.service("chat").update_conversation(Actor(id=ALICE), conversation_id, {"isPublic": False})

    hooked_plugin.during_join.append(make_private)
    bob = await connect(ws_connect, BOB)
    refused = await bob.request("join-conversation", {"conversationId": cid})
    assert refused["type"] == "error" and refused["data"]["code"] == "NOT_FOUND"
    await send(fetch, cid, "after")
    assert (await bob.request("ping"))["type"] == "pong"
    assert [f for f in bob.frames if f["type"] == "new-message"] == []


# -- acts_on: a send no filter acts on is stored in one database call ---------------------------

from . import scoped_plugin  # noqa: E402

WITH_SCOPED = pytest.mark.vachat(plugins=["chat", ("scoped", scoped_plugin)])


def _count_looks(app) -> list[int]:
    """How many drafts chat's look before the filter handled (one entry per batch)."""
    looks = app.service("chat").looks
    handled: list[int] = []
    work = looks.work

    def counting(items):
        handled.append(len(items))
        return work(items)

    looks.work = counting
    return handled


@pytest.mark.gen_test
@WITH_SCOPED
async def test_a_filter_that_acts_on_some_drafts_sees_only_those(app, fetch):
    scoped_plugin.seen.clear()
    looks = _count_looks(app)
    conversation = await create_conversation(fetch)
    plain = (await send(fetch, conversation["id"], "nothing to see"))["data"]
    assert scoped_plugin.seen == [] and looks == []  # stored in one call: no look, no filter
    checked = (await send(fetch, conversation["id"], "check me"))["data"]
    assert [m["content"] for m in scoped_plugin.seen] == ["check me"] and sum(looks) == 1
    refused = await fetch("/api/chat/message", method="POST", user=ALICE,
                          json={"conversationId": conversation["id"], "content": "check me and refuse"})
    assert_error(refused, 400, "VALIDATION_FAILED")
    page = (await fetch(f"/api/chat/conversations/{conversation['id']}/messages", user=ALICE)).data
    assert [m["id"] for m in page["items"]] == [checked["id"], plain["id"]]


@pytest.mark.gen_test
@WITH_SCOPED
async def test_a_draft_no_filter_acts_on_is_still_checked_for_access(app, fetch):
    conversation = await create_conversation(fetch)
    response = await fetch("/api/chat/message", method="POST", user=BOB,
                           json={"conversationId": conversation["id"], "content": "nothing to see"})
    assert_error(response, 404, "NOT_FOUND")
    assert scoped_plugin.seen == [] or all(m["content"] != "nothing to see" for m in scoped_plugin.seen)


@pytest.mark.gen_test
@WITH_HOOKS
async def test_a_filter_without_acts_on_sees_every_message(app, fetch):
    looks = _count_looks(app)
    conversation = await create_conversation(fetch)
    await send(fetch, conversation["id"], "plain")
    assert [m["content"] for m in recorded("before_store")] == ["plain"] and sum(looks) == 1


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=["chat", "files", "ai"])
async def test_with_the_built_in_plugins_a_plain_message_skips_the_look(app, fetch):
    """The files and AI plugins act only on messages with files or asking for a reply."""
    assert len(app.hooks.chat_message_before_store.implementations()) == 2
    looks = _count_looks(app)
    conversation = await create_conversation(fetch)
    await send(fetch, conversation["id"], "plain")
    assert looks == []
