"""The assistant through the real server with the ``openai`` provider talking to a real
OpenAI-compatible SSE server on loopback: streamed replies with the server's usage, coalesced
frames, upstream failures and timeouts before and after the first token, stop closing the
upstream connection, the ``ai_before_request`` hook, and ten replies streaming at once."""

from __future__ import annotations

import asyncio

import pytest

from . import redacting_plugin
from .fake_openai import Script
from .helpers import ALICE, ask, check_reply, connect, create_conversation, join, reply_frames

@pytest.fixture
def vachat_config(request, fake_openai):
    """The openai provider pointed at the fake server; ``@pytest.mark.ai(**settings)`` adds to it."""
    marker = request.node.get_closest_marker("ai")
    section = {"provider": "openai", "base_url": fake_openai.base_url, "api_key": "sk-test", "model": "fake-model",
               "timeout": 5, "idle_timeout": 5, "max_retries": 0, **(marker.kwargs if marker else {})}
    return {"plugin_sections": {"ai": section}}


async def joined_conversation(fetch, ws_connect, **fields):
    cid = (await create_conversation(fetch, **fields))["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    return cid, alice


@pytest.mark.gen_test
async def test_a_reply_streams_from_the_server_with_its_usage(fetch, ws_connect, fake_openai):
    fake_openai.script(Script(tokens=["The", " answer", " is", " 42."]))
    cid, alice = await joined_conversation(fetch, ws_connect, metadata={"systemPrompt": "Be exact."})
    asked = (await ask(fetch, cid, "What is the answer?")).data
    stored = check_reply(await reply_frames(alice), cid)
    assert stored["content"] == "The answer is 42." and stored["parentId"] == asked["id"]
    metadata = stored["metadata"]
    assert (metadata["provider"], metadata["model"], metadata["finishReason"]) == ("openai", "fake-model", "stop")
    # The server's own usage (the fake counts words): 5 + 2 + 4 prompt, 4 completion.
    assert (metadata["promptTokens"], metadata["completionTokens"], metadata["usageEstimated"]) == (11, 4, False)
    assert fake_openai.requests[0].body["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."}, {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "What is the answer?"}]


@pytest.mark.gen_test
async def test_fast_tokens_are_coalesced_without_changing_the_text(fetch, ws_connect, fake_openai):
    tokens = [f"t{n} " for n in range(400)]
    fake_openai.script(Script(tokens=tokens))
    cid, alice = await joined_conversation(fetch, ws_connect)
    await ask(fetch, cid)
    frames = await reply_frames(alice)
    stored = check_reply(frames, cid)
    assert stored["content"] == "".join(tokens)
    assert 1 <= sum(f["type"] == "ai-delta" for f in frames) < len(tokens)


@pytest.mark.gen_test
async def test_an_upstream_500_stores_an_error_reply_and_tells_the_room(fetch, ws_connect, fake_openai):
    fake_openai.script(Script(status=500))
    cid, alice = await joined_conversation(fetch, ws_connect)
    await ask(fetch, cid)
    stored = check_reply(await reply_frames(alice), cid)
    assert stored["type"] == "error" and "HTTP 500" in stored["content"]
    assert stored["metadata"]["finishReason"] == "error"
    # Nothing came back: nothing is charged.
    assert stored["metadata"]["promptTokens"] == 0
    assert (await fetch("/api/ai/usage", user=ALICE)).data["used"] == 0
    assert 'vachat_ai_errors_total{kind="error",model="fake-model",provider="openai"} 1.0' in \
        (await fetch("/metrics")).body.decode()


@pytest.mark.gen_test
@pytest.mark.ai(max_retries=2)
async def test_an_upstream_503_is_retried_before_the_first_token(fetch, ws_connect, fake_openai):
    fake_openai.script(Script(status=503, retry_after="0"), Script(tokens=["fine"]))
    cid, alice = await joined_conversation(fetch, ws_connect)
    await ask(fetch, cid)
    stored = check_reply(await reply_frames(alice), cid)
    assert stored["content"] == "fine" and len(fake_openai.requests) == 2


@pytest.mark.gen_test
@pytest.mark.ai(timeout=0.3)
async def test_a_timeout_before_the_first_token(fetch, ws_connect, fake_openai):
    fake_openai.script(Script(stall_before_first=True))
    cid, alice = await joined_conversation(fetch, ws_connect)
    await ask(fetch, cid)
    stored = check_reply(await reply_frames(alice), cid)
    assert stored["type"] == "error" and "within 0.3s" in stored["content"]
    await fake_openai.wait_for(lambda fake: fake.requests[0].client_left)


@pytest.mark.gen_test
@pytest.mark.ai(idle_timeout=0.3)
async def test_a_timeout_after_the_first_token_keeps_the_partial_text(fetch, ws_connect, fake_openai):
    fake_openai.script(Script(tokens=["half", " an", " answer"], stall_after=2))
    cid, alice = await joined_conversation(fetch, ws_connect)
    await ask(fetch, cid)
    frames = await reply_frames(alice)
    stored = check_reply(frames, cid)
    assert stored["type"] == "error" and "stopped sending" in stored["content"]
    assert stored["metadata"]["partialContent"] == "half an" == "".join(
        f["data"]["delta"] for f in frames if f["type"] == "ai-delta")
    await fake_openai.wait_for(lambda fake: fake.requests[0].client_left)
    assert len(fake_openai.requests) == 1


@pytest.mark.gen_test
@pytest.mark.ai(max_retries=2)
async def test_a_connection_dropped_after_the_first_token_is_an_error_not_retried(fetch, ws_connect, fake_openai):
    fake_openai.script(Script(tokens=["cut", " short", " here"], drop_after=2))
    cid, alice = await joined_conversation(fetch, ws_connect)
    await ask(fetch, cid)
    stored = check_reply(await reply_frames(alice), cid)
    assert stored["type"] == "error" and "connection to the AI provider failed" in stored["content"]
    assert stored["metadata"]["partialContent"] == "cut short" and len(fake_openai.requests) == 1


@pytest.mark.gen_test
async def test_stop_closes_the_upstream_connection_and_stores_the_partial_reply(fetch, ws_connect, fake_openai):
    fake_openai.script(Script(tokens=["partial", " reply", " never", " ends"], stall_after=2))
    cid, alice = await joined_conversation(fetch, ws_connect)
    await ask(fetch, cid)
    await fake_openai.wait_for(lambda fake: fake.requests and fake.requests[0].sent == 2)
    frames = [await alice.receive("ai-typing")]
    while "".join(f["data"]["delta"] for f in frames if f["type"] == "ai-delta") != "partial reply":
        frames.append(await alice.receive("ai-delta"))
    assert (await alice.request("stop-generation", {"conversationId": cid}))["data"]["stopped"] is True
    await fake_openai.wait_for(lambda fake: fake.requests[0].client_left)
    stored = check_reply(frames + await reply_frames(alice), cid)
    assert stored["content"] == "partial reply" and stored["metadata"]["finishReason"] == "cancelled"


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=["ai", ("redactor", redacting_plugin)])
async def test_ai_before_request_edits_what_the_provider_sees(fetch, ws_connect, fake_openai):
    cid, alice = await joined_conversation(fetch, ws_connect)
    await fetch("/api/chat/message", method="POST", json={"conversationId": cid, "content": "my secret"}, user=ALICE)
    await ask(fetch, cid, "what did I say?")
    check_reply(await reply_frames(alice), cid)
    assert fake_openai.requests[0].body["messages"] == [
        {"role": "system", "content": "You are a helpful assistant. (redacted)"},
        {"role": "user", "content": "what did I say?"}]


@pytest.mark.gen_test(timeout=60)
async def test_ten_replies_stream_at_once_each_whole_and_in_order(fetch, ws_connect, fake_openai):
    """Ten conversations' replies interleave on one event loop; each arrives complete, in its
    own order, and is stored. (How long a callback holds the loop meanwhile is a wall-clock
    figure: bench/ai_event_loop.py prints it.)"""
    fake_openai.default = Script(tokens=[f"w{n} " for n in range(60)], delay=0.005)
    conversations = [await joined_conversation(fetch, ws_connect) for _ in range(10)]
    asked = await asyncio.gather(*(ask(fetch, cid, f"question {n}") for n, (cid, _) in enumerate(conversations)))
    replies = await asyncio.gather(*(reply_frames(socket) for _, socket in conversations))
    for (cid, _), question, frames in zip(conversations, asked, replies):
        stored = check_reply(frames, cid)
        assert stored["content"] == "".join(f"w{n} " for n in range(60))
        assert stored["parentId"] == question.data["id"]
