"""The assistant through the real server with the ``echo`` provider: the frames of a reply and
what is stored, stop, the one-reply rule, quotas, regenerate, resume on the same node, usage,
metrics and the user-deletion hook."""

from __future__ import annotations

import asyncio

import pytest

from vachat.testing import assert_error

from plugins.ai import admin_dashboard_figures
from plugins.ai.assistant import Assistant
from plugins.ai.generation import DELTAS_PER_TURN

from . import refusing_plugin, slow_listener
from .helpers import ALICE, BOB, ask, check_reply, connect, create_conversation, join, reply_frames

FAST = {"plugin_sections": {"ai": {"echo_delay": 0}}}
# Slow enough that a test acts while the reply streams (each word waits this long).
SLOW = {"plugin_sections": {"ai": {"echo_delay": 0.2}}}
LONG_TEXT = " ".join(f"word{n}" for n in range(40))


@pytest.mark.gen_test
@pytest.mark.vachat(config=FAST)
async def test_a_rest_message_gets_a_streamed_reply_stored_as_streamed(fetch, ws_connect):
    conversation = await create_conversation(fetch)
    cid = conversation["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    asked = (await ask(fetch, cid, "Tell me something")).data
    stored = check_reply(await reply_frames(alice), cid)
    assert stored["content"] == "Echo: Tell me something"
    assert stored["parentId"] == asked["id"] and stored["type"] == "text"
    metadata = stored["metadata"]
    assert (metadata["provider"], metadata["model"], metadata["finishReason"]) == ("echo", "echo", "stop")
    assert metadata["promptTokens"] > 0 and metadata["completionTokens"] == 4
    assert isinstance(metadata["latency"], int) and metadata["latency"] >= 0
    page = await fetch(f"/api/chat/conversations/{cid}/messages", user=ALICE)
    assert [m["id"] for m in page.data["items"]] == [stored["id"], asked["id"]]
    assert page.data["items"][0] == stored
    assert (await fetch(f"/api/chat/conversations/{cid}", user=ALICE)).data["currentMessageId"] == stored["id"]


@pytest.mark.gen_test
@pytest.mark.vachat(config=FAST)
async def test_a_socket_message_gets_the_same_reply(fetch, ws_connect):
    cid = (await create_conversation(fetch))["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    acked = await alice.request("send-message", {"conversationId": cid, "content": "over the socket",
                                                 "requiresAIResponse": True})
    assert acked["type"] == "ack"
    stored = check_reply(await reply_frames(alice), cid)
    assert stored["content"] == "Echo: over the socket" and stored["parentId"] == acked["data"]["id"]


@pytest.mark.gen_test
@pytest.mark.vachat(config=SLOW)
async def test_stop_generation_stores_the_partial_reply(fetch, ws_connect):
    cid = (await create_conversation(fetch))["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    await ask(fetch, cid, LONG_TEXT)
    frames = [await alice.receive("ai-typing"), await alice.receive("ai-delta")]
    stopped = await alice.request("stop-generation", {"conversationId": cid})
    assert stopped["type"] == "ack" and stopped["data"]["stopped"] is True
    frames += await reply_frames(alice)
    stored = check_reply(frames, cid)
    assert stored["metadata"]["finishReason"] == "cancelled"
    assert stored["content"] and len(stored["content"]) < len("Echo: " + LONG_TEXT)
    again = await alice.request("stop-generation", {"conversationId": cid})
    assert again["data"]["stopped"] is False


@pytest.mark.gen_test
@pytest.mark.vachat(config=SLOW)
async def test_only_the_owner_may_stop_and_only_a_conversation_they_can_see(fetch, ws_connect):
    cid = (await create_conversation(fetch, isPublic=True))["id"]
    bob = await connect(ws_connect, BOB)
    refused = await bob.request("stop-generation", {"conversationId": cid})
    assert refused["type"] == "error" and refused["data"]["code"] == "FORBIDDEN"
    private = (await create_conversation(fetch))["id"]
    hidden = await bob.request("stop-generation", {"conversationId": private})
    assert hidden["data"]["code"] == "NOT_FOUND"
    invalid = await bob.request("stop-generation", {})
    assert invalid["data"]["code"] == "VALIDATION_FAILED"


@pytest.mark.gen_test
@pytest.mark.vachat(config=SLOW)
async def test_one_reply_at_a_time_per_conversation(fetch, ws_connect):
    cid = (await create_conversation(fetch))["id"]
    other = (await create_conversation(fetch))["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    await ask(fetch, cid, LONG_TEXT)
    await alice.receive("ai-delta")
    assert_error(await ask(fetch, cid, "again", expect=409), 409, "CONFLICT")
    refused = await alice.request("send-message", {"conversationId": cid, "content": "again", "requiresAIResponse": True})
    assert refused["type"] == "error" and refused["data"]["code"] == "CONFLICT"
    # A plain message is fine, and so is a reply in another conversation.
    plain = await fetch("/api/chat/message", method="POST", json={"conversationId": cid, "content": "plain"}, user=ALICE)
    assert plain.code == 201
    await ask(fetch, other, "elsewhere")
    page = await fetch(f"/api/chat/conversations/{cid}/messages", user=ALICE)
    assert [m["content"] for m in page.data["items"]] == ["plain", LONG_TEXT]  # nothing stored for the refusals
    assert (await alice.request("stop-generation", {"conversationId": cid}))["data"]["stopped"] is True


@pytest.mark.gen_test
@pytest.mark.vachat(config={"plugin_sections": {"ai": {"echo_delay": 0, "daily_tokens": "free=60,pro=100000"}}})
async def test_quota_refuses_before_anything_is_stored_and_usage_shows_it(fetch, ws_connect, make_user):
    alice = await make_user()  # tier free
    cid = (await create_conversation(fetch, user=alice))["id"]
    assert (await fetch("/api/ai/usage", user=alice)).data["used"] == 0
    socket = await connect(ws_connect, alice)
    await join(socket, cid)
    # The prompt (the system prompt's 7 tokens and the question's 11) and the reply's
    # allowance (what is left: 42) fit the 60 exactly; the reply costs 9 (its words).
    await ask(fetch, cid, "a question that costs more than five tokens", user=alice)
    stored = check_reply(await reply_frames(socket), cid)
    used = stored["metadata"]["promptTokens"] + stored["metadata"]["completionTokens"]
    usage = (await fetch("/api/ai/usage", user=alice)).data
    assert usage["used"] == used == 27 and usage["limit"] == 60 and usage["tier"] == "free"
    assert len(usage["date"]) == 10
    # The next prompt (the history so far and the question: 33) leaves less than 16 of the 33 left.
    refused = await ask(fetch, cid, "one more", user=alice, expect=429)
    assert_error(refused, 429, "QUOTA_EXCEEDED")
    assert int(refused.headers["Retry-After"]) > 0
    over_socket = await socket.request("send-message", {"conversationId": cid, "content": "x", "requiresAIResponse": True})
    assert over_socket["data"]["code"] == "QUOTA_EXCEEDED"
    page = await fetch(f"/api/chat/conversations/{cid}/messages", user=alice)
    assert len(page.data["items"]) == 2  # the first question and its reply only
    # Without asking for a reply, writing is not limited; a tier not named is unlimited.
    assert (await fetch("/api/chat/message", method="POST", user=alice,
                        json={"conversationId": cid, "content": "no reply needed"})).code == 201
    pro = await make_user(tier="pro")
    assert (await fetch("/api/ai/usage", user=pro)).data["limit"] == 100000
    gold = await make_user(tier="gold")
    assert (await fetch("/api/ai/usage", user=gold)).data["limit"] is None


@pytest.mark.gen_test
@pytest.mark.vachat(config=FAST)
async def test_regenerate_adds_a_sibling_and_moves_the_current_branch(fetch, ws_connect):
    cid = (await create_conversation(fetch))["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    question = (await ask(fetch, cid, "first answer please")).data
    first = check_reply(await reply_frames(alice), cid)
    regenerated = await fetch(f"/api/chat/messages/{first['id']}/regenerate", method="POST", user=ALICE)
    assert regenerated.code == 202, regenerated.body
    assert regenerated.data["parentId"] == question["id"] and regenerated.data["replaces"] == first["id"]
    second = check_reply(await reply_frames(alice), cid)
    assert second["id"] == regenerated.data["messageId"] != first["id"]
    assert second["parentId"] == first["parentId"] == question["id"]
    assert second["content"] == first["content"]  # echo is deterministic: same context, same reply
    page = await fetch(f"/api/chat/conversations/{cid}/messages", user=ALICE)
    assert {m["id"] for m in page.data["items"]} == {question["id"], first["id"], second["id"]}
    assert (await fetch(f"/api/chat/conversations/{cid}", user=ALICE)).data["currentMessageId"] == second["id"]


@pytest.mark.gen_test
@pytest.mark.vachat(config=FAST)
async def test_regenerate_refusals(fetch, ws_connect):
    cid = (await create_conversation(fetch, isPublic=True))["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    question = (await ask(fetch, cid, "hi")).data
    reply = check_reply(await reply_frames(alice), cid)
    assert_error(await fetch(f"/api/chat/messages/{question['id']}/regenerate", method="POST", user=ALICE),
                 400, "VALIDATION_FAILED")
    assert_error(await fetch(f"/api/chat/messages/{reply['id']}/regenerate", method="POST", user=BOB), 403, "FORBIDDEN")
    missing = assert_error(await fetch("/api/chat/messages/nope/regenerate", method="POST", user=BOB),
                           404, "NOT_FOUND")
    private = (await create_conversation(fetch))["id"]
    await join(alice, private)
    await ask(fetch, private, "private")
    hidden = check_reply(await reply_frames(alice), private)
    elsewhere = assert_error(await fetch(f"/api/chat/messages/{hidden['id']}/regenerate", method="POST", user=BOB),
                             404, "NOT_FOUND")
    # The same answer: it must not tell that the id is a message in someone else's conversation.
    assert elsewhere == missing and missing["error"] == "Message not found"


@pytest.mark.gen_test
@pytest.mark.vachat(config={"plugin_sections": {"ai": {"echo_delay": 0.05}}})
async def test_a_socket_joining_mid_reply_gets_the_text_so_far_then_the_rest(fetch, ws_connect):
    cid = (await create_conversation(fetch))["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    await ask(fetch, cid, LONG_TEXT)
    for _ in range(3):
        await alice.receive("ai-delta")
    second_device = await connect(ws_connect)
    answer = await join(second_device, cid)
    generation = answer["generation"]
    assert generation is not None and generation["index"] >= 2 and generation["text"].startswith("Echo: ")
    rest = await reply_frames(second_device)
    deltas = [f["data"] for f in rest if f["type"] == "ai-delta"]
    stored = rest[-2]["data"]
    assert stored["id"] == generation["messageId"]
    # No gap, no repeat: the deltas continue right after the index the join reported.
    assert [d["index"] for d in deltas] == list(range(generation["index"] + 1, generation["index"] + 1 + len(deltas)))
    assert generation["text"] + "".join(d["delta"] for d in deltas) == stored["content"] == "Echo: " + LONG_TEXT
    assert (await join(second_device, cid))["generation"] is None


@pytest.mark.gen_test
@pytest.mark.vachat(config=FAST)
async def test_context_is_the_conversations_own_branch(app, fetch, ws_connect):
    cid = (await create_conversation(fetch, metadata={"systemPrompt": "Answer like a pirate."}))["id"]
    other = (await create_conversation(fetch))["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    await fetch("/api/chat/message", method="POST", json={"conversationId": other, "content": "secret"}, user=ALICE)
    await ask(fetch, cid, "first")
    await reply_frames(alice)
    second = (await ask(fetch, cid, "second")).data
    await reply_frames(alice)
    assistant = app.service("ai")
    conversation = await app.service("chat").get_conversation(cid)
    context = await assistant.context(conversation, second["id"])
    assert context == [{"role": "system", "content": "You are a helpful assistant."},
                       {"role": "system", "content": "Answer like a pirate."},
                       {"role": "user", "content": "first"}, {"role": "assistant", "content": "Echo: first"},
                       {"role": "user", "content": "second"}]
    plain = await app.service("chat").get_conversation(other)
    assert (await assistant.context(plain, None))[0] == {"role": "system", "content": "You are a helpful assistant."}


@pytest.mark.gen_test
@pytest.mark.vachat(config={"plugin_sections": {"ai": {"echo_delay": 0, "context_tokens": 20,
                                                      "system_prompt": "Be brief."}}})
async def test_context_keeps_the_most_recent_messages_that_fit_the_budget(app, fetch, ws_connect):
    cid = (await create_conversation(fetch))["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    for text in ("one " * 8, "two " * 8):
        await ask(fetch, cid, text.strip())
        await reply_frames(alice)
    last = (await ask(fetch, cid, "three")).data
    await reply_frames(alice)
    context = await app.service("ai").context(await app.service("chat").get_conversation(cid), last["id"])
    # 20 tokens of ceil(characters / 4): the system prompt (3), then newest first while they
    # fit: "three" (2), the reply before it (10); the question before that (8) would not.
    assert context[0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in context[1:]] == ["Echo: " + "two " * 7 + "two", "three"]


@pytest.mark.gen_test
@pytest.mark.vachat(config=FAST)
async def test_metrics_admin_figures_and_user_deletion(app, fetch, ws_connect, make_user):
    alice = await make_user()
    cid = (await create_conversation(fetch, user=alice))["id"]
    socket = await connect(ws_connect, alice)
    await join(socket, cid)
    await ask(fetch, cid, "count me", user=alice)
    stored = check_reply(await reply_frames(socket), cid)
    tokens = stored["metadata"]["promptTokens"] + stored["metadata"]["completionTokens"]
    text = (await fetch("/metrics")).body.decode()
    assert 'vachat_ai_generations_total{finish_reason="stop",model="echo",provider="echo"} 1.0' in text
    assert 'vachat_ai_time_to_first_token_seconds_count{model="echo",provider="echo"} 1.0' in text
    assert f'vachat_ai_tokens_total{{kind="completion",model="echo",provider="echo"}} {float(stored["metadata"]["completionTokens"])}' in text
    assert await admin_dashboard_figures(app) == {"ai": {"tokensToday": tokens}}
    await app.hooks.vachat_user_deleting(user_id=alice.id)
    assert await admin_dashboard_figures(app) == {"ai": {"tokensToday": 0}}


@pytest.mark.gen_test
@pytest.mark.vachat(config={"plugin_sections": {"ai": {"echo_delay": 0.5}}})
async def test_replies_running_at_shutdown_are_stored(app, fetch, ws_connect):
    cid = (await create_conversation(fetch))["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    await ask(fetch, cid, LONG_TEXT)
    await alice.receive("ai-delta")
    await app.service("ai").shutdown()
    page = await fetch(f"/api/chat/conversations/{cid}/messages", user=ALICE)
    reply = page.data["items"][0]
    assert reply["role"] == "assistant" and reply["metadata"]["finishReason"] == "shutdown"
    assert reply["content"].startswith("Echo: ") and len(reply["content"]) < len("Echo: " + LONG_TEXT)


@pytest.mark.gen_test
@pytest.mark.vachat(config=SLOW)
async def test_a_reply_outlives_its_deleted_question_or_conversation(app, fetch, ws_connect, caplog):
    cid = (await create_conversation(fetch))["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    question = (await ask(fetch, cid, LONG_TEXT)).data
    await alice.receive("ai-delta")
    assert (await fetch(f"/api/chat/messages/{question['id']}", method="DELETE", user=ALICE)).code == 200
    assert (await alice.request("stop-generation", {"conversationId": cid}))["data"]["stopped"] is True
    stored = (await alice.receive("new-message"))["data"]
    assert stored["id"] == question["id"]  # the question's own broadcast
    stored = (await alice.receive("new-message"))["data"]
    # Its question is gone: the reply is kept on the current branch rather than lost.
    assert stored["role"] == "assistant" and stored["parentId"] is None and stored["content"].startswith("Echo: ")

    gone = (await create_conversation(fetch))["id"]
    await join(alice, gone)
    await ask(fetch, gone, LONG_TEXT)
    await alice.receive("ai-delta")
    generation = app.service("ai").running[gone]
    assert (await fetch(f"/api/chat/conversations/{gone}", method="DELETE", user=ALICE)).code == 200
    await generation.stop()
    await generation.task
    assert gone not in app.service("ai").running
    assert not [r for r in caplog.records if r.levelname == "ERROR" and "AI" in r.getMessage()]
    # The conversation's slot is free again (here: a new conversation is unaffected, and the
    # deleted one no longer exists to ask in).
    assert (await alice.request("stop-generation", {"conversationId": cid}))["data"]["stopped"] is False


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=["ai", "admin"], config=FAST)
async def test_the_admin_dashboard_shows_todays_tokens(fetch, ws_connect):
    admin = {"Authorization": "Bearer test:root", "X-Test-Permissions": "admin.dashboard"}
    before = (await fetch("/api/admin/dashboard", headers=admin)).data
    assert before["ai"] == {"tokensToday": 0} and "ai" not in before["missing"]
    cid = (await create_conversation(fetch))["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    await ask(fetch, cid, "dashboard")
    metadata = check_reply(await reply_frames(alice), cid)["metadata"]
    after = (await fetch("/api/admin/dashboard", headers=admin)).data
    assert after["ai"] == {"tokensToday": metadata["promptTokens"] + metadata["completionTokens"]}


@pytest.mark.gen_test
@pytest.mark.vachat(config=SLOW)
async def test_deleting_a_user_stops_their_reply_and_leaves_no_usage(app, fetch, ws_connect, make_user):
    alice = await make_user()
    cid = (await create_conversation(fetch, user=alice))["id"]
    socket = await connect(ws_connect, alice)
    await join(socket, cid)
    await ask(fetch, cid, LONG_TEXT, user=alice)
    await socket.receive("ai-delta")
    await app.hooks.vachat_user_deleting(user_id=alice.id)
    assert cid not in app.service("ai").running
    assert await app.service("ai").usage.used_today(alice.id) == 0


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=["ai", ("refuser", refusing_plugin)], config=FAST)
async def test_a_message_refused_after_the_slot_was_reserved_releases_it_at_once(app, fetch, ws_connect):
    cid = (await create_conversation(fetch))["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    refused = await ask(fetch, cid, "something forbidden", expect=400)
    assert refused.json["code"] == "VALIDATION_FAILED"
    assert Assistant.of(app).reserved == {}  # the AI plugin did reserve, and has let go
    asked = (await ask(fetch, cid, "something fine")).data  # at once: no 409
    stored = check_reply(await reply_frames(alice), cid)
    assert stored["parentId"] == asked["id"] and stored["content"] == "Echo: something fine"
    # Over the socket too, and the AI's own refusal (a reply already running) frees nothing.
    denied = await alice.request("send-message", {"conversationId": cid, "content": "forbidden again",
                                                  "requiresAIResponse": True})
    assert denied["type"] == "error" and denied["data"]["code"] == "VALIDATION_FAILED"
    acked = await alice.request("send-message", {"conversationId": cid, "content": "fine again",
                                                 "requiresAIResponse": True})
    assert acked["type"] == "ack"
    check_reply(await reply_frames(alice), cid)


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=["ai", ("listener", slow_listener)], config=FAST)
async def test_a_request_sent_on_seeing_the_stored_reply_is_not_refused(app, fetch, ws_connect):
    """The reply's slot is given back after its broadcast and hooks: a request sent the moment
    the client sees the reply waits for that, rather than meeting a 409."""
    cid = (await create_conversation(fetch))["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    await ask(fetch, cid, "first")
    while True:  # the first reply's new-message: what a client answers at once
        frame = await alice.receive("new-message")
        if frame["data"]["role"] == "assistant":
            break
    asked = await ask(fetch, cid, "second")  # while a plugin still listens to the first reply
    while True:
        frame = await alice.receive("new-message")
        if frame["data"]["role"] == "assistant" and frame["data"]["parentId"] == asked.data["id"]:
            break
    assert frame["data"]["content"] == "Echo: second"
    # Seen stored, the reply is over: a stop sent now stops nothing, though its bookkeeping
    # (the listener) still runs.
    assert (await alice.request("stop-generation", {"conversationId": cid}))["data"]["stopped"] is False


@pytest.mark.gen_test
@pytest.mark.vachat(config=FAST)
async def test_a_reply_whose_deltas_are_all_there_at_once_lets_the_loop_turn(app, fetch, ws_connect):
    """A provider that has a whole backlog ready (here: echo with no delay; a fast model when
    the server falls behind) is read a turn of the loop at a time, so that the other sockets
    and requests are served meanwhile instead of waiting for the whole reply."""
    assistant = Assistant.of(app)
    streams = []
    make_stream = assistant.provider.stream

    def remembered(*args):
        streams.append(make_stream(*args))
        return streams[-1]

    assistant.provider.stream = remembered  # type: ignore[method-assign]
    conversation = await create_conversation(fetch)
    alice = await connect(ws_connect)
    await join(alice, conversation["id"])
    words = 10 * DELTAS_PER_TURN
    seen: list[int] = []  # the deltas read so far, at each of the loop's turns

    async def watch() -> None:
        while not streams or len(streams[0].text_parts) < words:
            if streams:
                seen.append(len(streams[0].text_parts))
            await asyncio.sleep(0)

    watcher = asyncio.ensure_future(watch())
    await ask(fetch, conversation["id"], " ".join(f"w{n}" for n in range(words)))
    stored = check_reply(await reply_frames(alice), conversation["id"])
    await watcher
    assert stored["content"] == "Echo: " + " ".join(f"w{n}" for n in range(words))
    steps = [after - before for before, after in zip(seen, seen[1:])]
    assert steps and max(steps) <= DELTAS_PER_TURN, steps
