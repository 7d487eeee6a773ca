"""The client and ``vachat chat`` against the real AI plugin and its ``echo`` provider: a reply
streamed and returned, stopped, resumed across a cut connection, refused over the quota; the
one-shot command and the terminal client end to end."""

from __future__ import annotations

import asyncio
import json

import pytest

from vachat.client import AiDelta, Backoff, Client, Disconnected, QuotaExceeded, ValidationFailed

from .helpers import WAIT, Recorder, TcpProxy
from .test_interactive import Terminal, messages_of, step
from .test_oneshot import chat

# Each word of an echo reply waits this long (s): slow enough for a test to act mid-reply.
SLOW_ECHO = {"plugin_sections": {"ai": {"echo_delay": 0.2}}}
STEADY_ECHO = {"plugin_sections": {"ai": {"echo_delay": 0.05}}}


def url_of(http_port):
    return f"http://127.0.0.1:{http_port}"


async def signed_in(url, user):
    client = Client(url)
    await client.sign_in(user.email, user.password)
    return client


@pytest.mark.gen_test(timeout=60)
@pytest.mark.vachat(plugins=["chat", "ai"], config=SLOW_ECHO)
async def test_a_reply_streams_and_stops(production_http_server, http_port, fetch, make_user):
    user = await make_user()
    async with await signed_in(url_of(http_port), user) as client:
        cid = (await client.create_conversation("assistant")).id
        async with client.live() as live:
            reply = await live.ask(cid, "short one")
            assert "".join([delta async for delta in reply]) == "Echo: short one" == reply.message.content
            assert reply.message.metadata["provider"] == "echo" and reply.finish_reason == "stop"
            long = await live.ask(cid, " ".join(f"word{n}" for n in range(40)))
            pieces = long.__aiter__()
            first = await asyncio.wait_for(pieces.__anext__(), WAIT)
            assert await long.stop() is True
            rest = [piece async for piece in pieces]
            assert long.message.metadata["finishReason"] == "cancelled"
            assert first + "".join(rest) == long.message.content and len(long.message.content) < 200
            assert await live.stop(cid) is False  # nothing runs now
    stored = await messages_of(fetch, user, cid)
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]


@pytest.mark.gen_test(timeout=60)
@pytest.mark.vachat(plugins=["chat", "ai"], config=STEADY_ECHO)
async def test_a_regenerated_reply_streams_beside_the_old_one(production_http_server, http_port, fetch, make_user):
    user = await make_user()
    async with await signed_in(url_of(http_port), user) as client:
        cid = (await client.create_conversation("regenerate")).id
        async with client.live() as live:
            asked = await live.ask(cid, "say it again")
            old = await asked.final()
            again = await live.regenerate(old.id)
            deltas = [delta async for delta in again]
            assert len(deltas) > 1 and "".join(deltas) == again.message.content == "Echo: say it again"
            assert again.message.id != old.id and again.message.parent_id == asked.question.id == old.parent_id
            assert again.finish_reason == "stop"
            with pytest.raises(ValidationFailed):
                await live.regenerate(asked.question.id)  # only an assistant reply can be
        # A connection that has not joined the conversation joins it to follow the new reply.
        async with client.live() as other:
            third = await other.regenerate(again.message.id)
            assert "".join([delta async for delta in third]) == third.message.content == "Echo: say it again"
        current = (await client.get_conversation(cid)).raw["currentMessageId"]
    assert current == third.message.id
    stored = await messages_of(fetch, user, cid)
    assert [m["id"] for m in stored] == [asked.question.id, old.id, again.message.id, third.message.id]
    assert {m["parentId"] for m in stored[1:]} == {asked.question.id}


@pytest.mark.gen_test(timeout=60)
@pytest.mark.vachat(plugins=["chat", "ai"],
                    config={"plugin_sections": {"ai": {"echo_delay": 0, "daily_tokens": "free=40"}}})
async def test_over_the_quota_is_a_typed_error_and_nothing_is_stored(production_http_server, http_port, fetch,
                                                                     make_user):
    user = await make_user(tier="free")
    async with await signed_in(url_of(http_port), user) as client:
        cid = (await client.create_conversation("quota")).id
        async with client.live() as live:
            await (await live.ask(cid, "use up the day's tokens please")).final()
            with pytest.raises(QuotaExceeded) as refused:
                await live.ask(cid, "one more")
            assert refused.value.code == "QUOTA_EXCEEDED"
    assert [m["content"] for m in await messages_of(fetch, user, cid)][-1] != "one more"


@pytest.mark.gen_test(timeout=90)
@pytest.mark.vachat(plugins=["chat", "ai"], config=STEADY_ECHO)
async def test_a_reply_cut_mid_stream_arrives_whole_and_once(http_port, fetch, ws_connect, make_user):
    user = await make_user()
    words = " ".join(f"w{n}" for n in range(60))
    async with TcpProxy(http_port) as proxy:
        client = await signed_in(proxy.url, user)
        cid = (await client.create_conversation("cut")).id
        watcher = await ws_connect(user=user)
        assert (await watcher.request("join-conversation", {"conversationId": cid}))["type"] == "ack"
        live = client.live(backoff=Backoff(0.05, 0.5))
        await live.connect()
        record = Recorder(live)
        stream = await live.ask(cid, words)
        deltas = []
        pieces = stream.__aiter__()
        for _ in range(2):
            deltas.append(await asyncio.wait_for(pieces.__anext__(), WAIT))
        proxy.cut()
        await record.wait_for(lambda events: any(isinstance(e, Disconnected) for e in events))
        during = asyncio.ensure_future(live.send(cid, "a send during the cut"))
        for _ in range(3):
            await watcher.receive("ai-delta", timeout=WAIT)
        proxy.restore()
        deltas += [piece async for piece in pieces]
        await asyncio.wait_for(during, WAIT)
        stored = await messages_of(fetch, user, cid)
        await record.wait_for(lambda events: set(record.message_ids()) >= {m["id"] for m in stored})
        await live.close()
        await client.close()
    assert "".join(deltas) == stream.message.content == f"Echo: {words}"
    assert [m["content"] for m in stored].count("a send during the cut") == 1
    delivered = record.message_ids()
    assert len(delivered) == len(set(delivered)) == len(stored)
    indexes = [e.index for e in record.of(AiDelta) if e.message_id == stream.message.id]
    assert indexes == sorted(set(indexes))


@pytest.mark.gen_test(timeout=120)
@pytest.mark.vachat(plugins=["chat", "ai"], config=STEADY_ECHO)
async def test_one_shot_with_the_echo_assistant(production_http_server, http_port, make_user):
    user = await make_user()
    status, out, err = await chat(url_of(http_port), "-m", "hello there", user=user)
    assert (status, out, err) == (0, "Echo: hello there\n", "")
    status, out, _ = await chat(url_of(http_port), "-m", "in json", "--json", user=user)
    events = [json.loads(line) for line in out.splitlines()]
    assert status == 0 and events[-1]["event"] == "reply"
    assert "".join(e["delta"] for e in events if e["event"] == "delta") == events[-1]["message"]["content"]
    assert events[-1]["message"]["content"] == "Echo: in json"


@pytest.mark.gen_test(timeout=180)
@pytest.mark.vachat(plugins=["chat", "ai"], config=SLOW_ECHO)
async def test_the_terminal_client_with_the_echo_assistant(production_http_server, http_port, fetch, make_user):
    user = await make_user()
    terminal = Terminal("--url", url_of(http_port), "--conversation", "new",
                        env={"VACHAT_EMAIL": user.email, "VACHAT_PASSWORD": user.password})
    try:
        await step(terminal.expect, "Type a message")
        terminal.line("hi")
        await step(terminal.expect, "assistant: Echo: hi")
        terminal.line(" ".join(f"word{n}" for n in range(40)))
        await step(terminal.expect, "assistant: Echo:")  # the first words, while the rest is generated
        conversation = (await fetch("/api/chat/conversations", user=user)).data[0]
        assert (await messages_of(fetch, user, conversation["id"]))[-1]["role"] == "user"
        terminal.line("/stop")
        await step(terminal.expect, r"\(stopped\)")
        terminal.line("/quit")
        assert await step(terminal.exit_status) == 0
    finally:
        terminal.close()
    stored = await messages_of(fetch, user, conversation["id"])
    assert stored[-1]["role"] == "assistant" and stored[-1]["metadata"]["finishReason"] == "cancelled"
    assert [m["content"] for m in stored][:2] == ["hi", "Echo: hi"]
