"""``vachat.client.LiveConnection`` against the real server, through a TCP proxy the test cuts:
every message once and in order across the cut, a send made during it stored once, a reply
streamed across it with nothing lost or repeated, and the protocol version check."""

from __future__ import annotations

import asyncio

import pytest

from vachat.client import (
    AiDelta, Backoff, Client, ConnectionFailed, Disconnected, LiveConnection, MessageDeleted, NewMessage,
    ProtocolMismatch, Reconnected, Unauthorized,
)

from . import fake_ai as client_fake_ai
from .helpers import WAIT, Recorder, TcpProxy

WITH_ASSISTANT = pytest.mark.vachat(plugins=["chat", ("fakeai", client_fake_ai)])
QUICK = Backoff(initial=0.05, maximum=0.5)


async def stored_messages(fetch, user, conversation_id):
    """Every message of the conversation as the server has it, oldest first."""
    page = (await fetch(f"/api/chat/conversations/{conversation_id}/messages?limit=200", user=user)).data
    return list(reversed(page["items"]))


async def post(fetch, user, conversation_id, content):
    """A message from the user's other device (straight to the server, not through the proxy)."""
    response = await fetch("/api/chat/message", method="POST", user=user,
                           json={"conversationId": conversation_id, "content": content})
    assert response.code == 201, response.json
    return response.data


async def observer(ws_connect, user, conversation_id):
    """A socket of the same user straight to the server: sees what happens during the cut."""
    socket = await ws_connect(user=user)
    assert (await socket.request("join-conversation", {"conversationId": conversation_id}))["type"] == "ack"
    return socket


async def signed_in(url, user):
    client = Client(url)
    await client.sign_in(user.email, user.password)
    return client


@pytest.fixture
def paced_assistant():
    """The stand-in assistant generates one delta per ``release()``."""
    client_fake_ai.pace = asyncio.Queue()

    def release(count=1):
        for _ in range(count):
            client_fake_ai.pace.put_nowait(None)

    yield release
    client_fake_ai.pace = None


@pytest.mark.gen_test(timeout=90)
@WITH_ASSISTANT
async def test_a_cut_loses_nothing_repeats_nothing_and_a_send_during_it_is_stored_once(
        http_port, fetch, ws_connect, make_user, paced_assistant):
    user = await make_user()
    async with TcpProxy(http_port) as proxy:
        client = await signed_in(proxy.url, user)
        cid = (await client.create_conversation("through a proxy")).id
        await post(fetch, user, cid, "written before the client joined")
        watcher = await observer(ws_connect, user, cid)
        live = client.live(backoff=QUICK)
        await live.connect()
        assert await live.join(cid) == []
        record = Recorder(live)

        mine = [await live.send(cid, "mine 0")]
        theirs = [await post(fetch, user, cid, "theirs 0")]
        words = " ".join(f"w{n}" for n in range(12))
        stream = await live.ask(cid, words)
        deltas: list[str] = []
        two_deltas = asyncio.Event()

        async def read_reply():
            async for delta in stream:
                deltas.append(delta)
                if len(deltas) >= 2:
                    two_deltas.set()
            return stream.message

        reply_task = asyncio.ensure_future(read_reply())
        paced_assistant(2)
        await asyncio.wait_for(two_deltas.wait(), WAIT)

        proxy.cut()
        await record.wait_for(lambda events: any(isinstance(e, Disconnected) for e in events))
        sending = asyncio.ensure_future(live.send(cid, "mine, typed during the cut"))
        theirs.append(await post(fetch, user, cid, "theirs during the cut"))
        doomed = await post(fetch, user, cid, "theirs, deleted during the cut")
        assert (await fetch(f"/api/chat/messages/{doomed['id']}", method="DELETE", user=user)).code == 200
        # The reply goes on generating while the client is away.
        paced_assistant(3)
        for _ in range(5):  # "Echo: " and "w0 " before the cut, three more during it
            await watcher.receive("ai-delta", timeout=WAIT)
        assert not sending.done() and live.unacknowledged[0]["content"] == "mine, typed during the cut"
        proxy.restore()
        await record.wait_for(lambda events: any(isinstance(e, Reconnected) for e in events))
        paced_assistant(100)  # the rest of the reply

        mine.append(await asyncio.wait_for(sending, WAIT))
        reply = await asyncio.wait_for(reply_task, WAIT)
        mine.append(await live.send(cid, "mine after"))
        theirs.append(await post(fetch, user, cid, "theirs after"))

        stored = await stored_messages(fetch, user, cid)
        expected = {m["id"] for m in stored if m["content"] != "written before the client joined"}
        await record.wait_for(lambda events: set(record.message_ids()) >= expected)
        await live.close()
        await client.close()

    delivered = record.message_ids()
    assert len(delivered) == len(set(delivered)), "a message was delivered twice"
    assert set(delivered) == expected
    # Each sender's messages in the order they were sent, the reply after its question.
    position = {message_id: index for index, message_id in enumerate(delivered)}
    assert [position[m.id] for m in mine] == sorted(position[m.id] for m in mine)
    assert [position[m["id"]] for m in theirs] == sorted(position[m["id"]] for m in theirs)
    assert position[stream.question.id] < position[reply.id]
    # The send during the cut is stored once; the deleted message is announced.
    assert [m["content"] for m in stored].count("mine, typed during the cut") == 1
    assert doomed["id"] in [e.message_id for e in record.of(MessageDeleted)]
    # The reply: streamed across the cut with no gap and no repeat.
    assert reply.content == f"Echo: {words}" and "".join(deltas) == reply.content
    assert next(m for m in stored if m["id"] == reply.id)["content"] == reply.content
    indexes = [e.index for e in record.of(AiDelta)]
    assert indexes == sorted(set(indexes))
    # It resumed from the join's generation: one delta carried what was generated meanwhile.
    assert any(later - earlier > 1 for earlier, later in zip(indexes, indexes[1:]))
    assert live.reconnects == 1 and record.of(Reconnected)


@pytest.mark.gen_test(timeout=60)
@WITH_ASSISTANT
async def test_a_reply_finished_during_the_cut_arrives_whole(http_port, fetch, ws_connect, make_user,
                                                             paced_assistant):
    user = await make_user()
    async with TcpProxy(http_port) as proxy:
        client = await signed_in(proxy.url, user)
        cid = (await client.create_conversation("finished away")).id
        watcher = await observer(ws_connect, user, cid)
        live = client.live(backoff=QUICK)
        await live.connect()
        await live.join(cid)
        stream = await live.ask(cid, "one two three four five six")
        pieces = stream.__aiter__()
        paced_assistant(1)
        first = await asyncio.wait_for(pieces.__anext__(), WAIT)
        proxy.cut()
        paced_assistant(100)
        stored_reply = (await watcher.receive("new-message", timeout=WAIT))["data"]
        while stored_reply["role"] != "assistant":
            stored_reply = (await watcher.receive("new-message", timeout=WAIT))["data"]
        proxy.restore()
        rest = [piece async for piece in pieces]
        assert first + "".join(rest) == stored_reply["content"] == "Echo: one two three four five six"
        assert stream.message.id == stored_reply["id"]
        await live.close()
        await client.close()


@pytest.mark.gen_test(timeout=60)
@pytest.mark.vachat(plugins=["chat"])
async def test_sends_keep_their_order_and_survive_several_cuts(http_port, fetch, make_user):
    user = await make_user()
    async with TcpProxy(http_port) as proxy:
        client = await signed_in(proxy.url, user)
        cid = (await client.create_conversation("many cuts")).id
        live = client.live(backoff=QUICK)
        await live.connect()
        await live.join(cid)
        record = Recorder(live)
        sends = []
        for round_ in range(3):
            sends += [asyncio.ensure_future(live.send(cid, f"r{round_} m{n}")) for n in range(5)]
            proxy.cut()
            proxy.restore()
        acknowledged = await asyncio.wait_for(asyncio.gather(*sends), WAIT)
        stored = await stored_messages(fetch, user, cid)
        assert [m["content"] for m in stored] == [f"r{r} m{n}" for r in range(3) for n in range(5)]
        assert [m.id for m in acknowledged] == [m["id"] for m in stored]
        await record.wait_for(lambda events: len(record.message_ids()) == 15)
        assert record.message_ids() == [m["id"] for m in stored]
        await live.close()
        await client.close()


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=["chat"])
async def test_a_newer_protocol_is_refused_clearly(production_http_server, http_port, make_user, monkeypatch):
    import vachat.ws

    monkeypatch.setattr(vachat.ws, "PROTOCOL_VERSION", 2)
    user = await make_user()
    client = await signed_in(f"http://127.0.0.1:{http_port}", user)
    with pytest.raises(ProtocolMismatch, match="protocol 2, newer than 1"):
        await client.live().connect()
    await client.close()


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=["chat"])
async def test_refused_credentials_and_an_unreachable_server_raise_at_connect(production_http_server, http_port):
    client = Client(f"http://127.0.0.1:{http_port}", api_key="vak_" + "x" * 43)
    with pytest.raises(Unauthorized):
        await client.live().connect()
    await client.close()
    async with TcpProxy(http_port) as proxy:
        proxy.cut()
        nowhere = Client(proxy.url)
        with pytest.raises(ConnectionFailed):
            await LiveConnection(nowhere).connect()
        await nowhere.close()


@pytest.mark.gen_test(timeout=120)
@pytest.mark.vachat(plugins=["chat"])
async def test_more_missed_than_a_join_answer_carries_is_paged_in(http_port, fetch, make_user):
    user = await make_user()
    many = 205  # the join's answer carries at most 200
    async with TcpProxy(http_port) as proxy:
        client = await signed_in(proxy.url, user)
        empty = (await client.create_conversation("empty when joined")).id
        busy = (await client.create_conversation("busy")).id
        live = client.live(backoff=QUICK)
        await live.connect()
        await live.join(empty)
        await live.join(busy)
        record = Recorder(live)
        seen = await live.send(busy, "seen before the cut")
        await record.wait_for(lambda events: seen.id in record.message_ids())
        proxy.cut()
        await record.wait_for(lambda events: any(isinstance(e, Disconnected) for e in events))
        posted = {empty: [], busy: []}
        for n in range(many):
            for cid in (empty, busy):
                posted[cid].append((await post(fetch, user, cid, f"{cid[-4:]} {n}"))["id"])
        proxy.restore()
        await record.wait_for(lambda events: len(record.message_ids()) == 1 + 2 * many)
        await live.close()
        await client.close()
    delivered = [e.message for e in record.of(NewMessage)]
    assert [m.id for m in delivered if m.conversation_id == empty] == posted[empty]
    assert [m.id for m in delivered if m.conversation_id == busy] == [seen.id, *posted[busy]]
