"""Group commit of sends through the real server: concurrent sends share one transaction, and
each caller still gets exactly its own answer (stored, retried, or refused), after the commit."""

from __future__ import annotations

import asyncio
import threading

import pytest

from vachat.plugin_api import Actor
from vachat.testing import assert_error

from .helpers import ALICE, BOB, MISSING_ID, create_conversation, send

# How long the test waits for the sends to queue behind the held batch (s); a bound, not a sleep.
QUEUE_WAIT_S = 10


@pytest.fixture
def held_batches(app, monkeypatch):
    """Hold the first batch on its database thread until `release()`; record every batch's size.
    The sends made meanwhile queue up and form the next batch together."""
    sizes: list[int] = []
    gate = threading.Event()
    batcher = app.service("chat").sends
    real = batcher.work

    def held(sends):
        sizes.append(len(sends))
        if len(sizes) == 1:
            gate.wait(QUEUE_WAIT_S)
        return real(sends)

    monkeypatch.setattr(batcher, "work", held)
    # One batch in flight (as on SQLite): the sends made meanwhile wait and form the next one.
    monkeypatch.setattr(batcher, "in_flight", 1)

    async def queued(n: int) -> None:
        for _ in range(QUEUE_WAIT_S * 100):
            if len(batcher._pending) >= n:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"only {len(batcher._pending)} sends queued, expected {n}")

    return sizes, gate.set, queued


@pytest.mark.gen_test(timeout=30)
async def test_concurrent_sends_share_a_batch_and_get_their_own_answers(app, fetch, held_batches):
    sizes, release, queued = held_batches
    mine = await create_conversation(fetch)
    other = await create_conversation(fetch)
    bobs_private = await create_conversation(fetch, user=BOB)
    bobs_public = await create_conversation(fetch, user=BOB, isPublic=True)
    first = asyncio.ensure_future(send(fetch, mine["id"], "first"))
    while not sizes:  # the first send's batch is on its database thread, held
        await asyncio.sleep(0.01)

    def post(conversation_id: str, content: str, **fields):
        return fetch("/api/chat/message", method="POST", user=ALICE,
                     json={"conversationId": conversation_id, "content": content, **fields})

    later = [
        post(mine["id"], "second"),
        post(mine["id"], "third", clientMessageId="c-3"),
        post(mine["id"], "third", clientMessageId="c-3"),  # a retry in the same batch: stored once
        post(other["id"], "elsewhere"),
        post(bobs_private["id"], "not mine"),  # 404: not readable
        post(bobs_public["id"], "not mine either"),  # 403: readable, not writable
        post(MISSING_ID, "nowhere"),
    ]
    answers = asyncio.ensure_future(asyncio.gather(*later))
    await queued(len(later))
    release()
    stored_first = (await first)["data"]
    second, third, retry, elsewhere, private, public, missing = await answers

    assert sizes == [1, len(later)]
    # Requests race to the server: either of the two with clientMessageId c-3 may be stored.
    assert (second.code, elsewhere.code) == (201, 201) and sorted([third.code, retry.code]) == [200, 201]
    assert retry.data == third.data
    assert_error(private, 404, "NOT_FOUND")
    assert_error(public, 403, "FORBIDDEN")
    assert_error(missing, 404, "NOT_FOUND")
    # In one conversation, the batch's messages chain in the order they arrived, after the first.
    items = (await fetch(f"/api/chat/conversations/{mine['id']}/messages", user=ALICE)).data["items"]
    assert sorted(m["content"] for m in items) == ["first", "second", "third"] and items[-1]["id"] == stored_first["id"]
    assert [m["parentId"] for m in items[:-1]] == [m["id"] for m in items[1:]]
    read = (await fetch(f"/api/chat/conversations/{mine['id']}", user=ALICE)).data
    assert read["messageCount"] == 3 and read["currentMessageId"] == items[0]["id"]
    assert read["lastMessage"]["id"] == items[0]["id"]
    assert (await fetch(f"/api/chat/conversations/{other['id']}", user=ALICE)).data["messageCount"] == 1
    for conversation in (bobs_private, bobs_public):
        assert (await fetch(f"/api/chat/conversations/{conversation['id']}", user=BOB)).data["messageCount"] == 0
    found = (await fetch("/api/chat/search?q=elsewhere", user=ALICE)).data["items"]
    assert [m["id"] for m in found] == [elsewhere.data["id"]]


@pytest.mark.gen_test(timeout=30)
async def test_a_send_refused_in_the_database_leaves_the_rest_of_its_batch_stored(app, fetch, held_batches):
    sizes, release, queued = held_batches
    conversation = await create_conversation(fetch)
    root = asyncio.ensure_future(send(fetch, conversation["id"], "root"))
    while not sizes:
        await asyncio.sleep(0.01)

    def post(content: str, **fields):
        return fetch("/api/chat/message", method="POST", user=ALICE,
                     json={"conversationId": conversation["id"], "content": content, **fields})

    later = [post("a"), post("orphan", parentId=MISSING_ID), post("b")]
    answers = asyncio.ensure_future(asyncio.gather(*later))
    await queued(len(later))
    release()
    root = (await root)["data"]
    a, orphan, b = await answers
    assert sizes == [1, 3]
    assert_error(orphan, 400, "VALIDATION_FAILED")
    assert (a.code, b.code) == (201, 201)
    older, newer = sorted([a.data, b.data], key=lambda m: m["id"])
    assert older["parentId"] == root["id"] and newer["parentId"] == older["id"]
    # A parentId goes one by one, in the same transaction as the others.
    branch = await send(fetch, conversation["id"], "branch", parentId=root["id"])
    assert branch["data"]["parentId"] == root["id"]
    read = (await fetch(f"/api/chat/conversations/{conversation['id']}", user=ALICE)).data
    assert read["messageCount"] == 4 and read["currentMessageId"] == branch["data"]["id"]


@pytest.mark.gen_test(timeout=30)
async def test_two_transactions_storing_into_one_conversation_chain_their_messages(app, fetch, monkeypatch):
    """What two nodes do when each stores a message in the same conversation at the same time:
    the second transaction reads the conversation only once the first has committed, so its
    message answers the first one, not the leaf both started from (a fork nobody asked for).
    On PostgreSQL the row lock does it (the test waits until the second transaction is queued
    on it); on SQLite transactions that write run one at a time anyway."""
    from plugins.chat import counters, store, wire

    conversation = await create_conversation(fetch)
    before = (await send(fetch, conversation["id"], "before"))["data"]
    first_inside, release_first = threading.Event(), threading.Event()
    real_count = counters.count_messages

    def count_then_hold(touched, stamp, *writes):  # inside the first transaction, its rows locked
        if not first_inside.is_set():
            first_inside.set()
            release_first.wait(QUEUE_WAIT_S)
        return real_count(touched, stamp, *writes)

    monkeypatch.setattr(counters, "count_messages", count_then_hold)
    alice = Actor(id=ALICE)
    first = asyncio.ensure_future(app.db.run(store.insert_user_messages, [
        (wire.Draft.from_body({"conversationId": conversation["id"], "content": "first"}), alice)]))
    while not first_inside.is_set():
        await asyncio.sleep(0.01)
    second = asyncio.ensure_future(send(fetch, conversation["id"], "second"))
    if app.db.is_postgres:
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        for _ in range(QUEUE_WAIT_S * 100):
            if (await app.db.run(lambda: app.db.engine.execute_sql(waiting).fetchone()[0])) >= 1:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the second transaction never waited for the first one's row")
    release_first.set()
    [(stored, (first_message, created, _))] = await first
    second_message = (await second)["data"]

    assert stored and created and first_message["parentId"] == before["id"]
    assert second_message["parentId"] == first_message["id"]
    read = (await fetch(f"/api/chat/conversations/{conversation['id']}", user=ALICE)).json["data"]
    assert read["currentMessageId"] == second_message["id"] and read["messageCount"] == 3


@pytest.mark.gen_test(timeout=30)
async def test_with_two_batches_in_flight_each_send_is_answered_after_its_own_commit(app, fetch, monkeypatch):
    """Two batches in flight (PostgreSQL's setting, forced here on any database): a batch for
    another conversation is stored and answered while the first is still held before its
    transaction, the first's caller hears nothing until its own batch is stored, and a send to
    the held batch's conversation waits for it (never a batch of its own beside it)."""
    batcher = app.service("chat").sends
    monkeypatch.setattr(batcher, "in_flight", 2)
    real, gate, held_inside = batcher.work, threading.Event(), threading.Event()
    sizes: list[int] = []

    def hold_first(sends):
        sizes.append(len(sends))
        if len(sizes) == 1:  # before its transaction: nothing of it is stored yet
            held_inside.set()
            gate.wait(QUEUE_WAIT_S)
        return real(sends)

    monkeypatch.setattr(batcher, "work", hold_first)
    held = await create_conversation(fetch)
    free = await create_conversation(fetch)
    first = asyncio.ensure_future(send(fetch, held["id"], "first"))
    while not held_inside.is_set():
        await asyncio.sleep(0.01)
    beside = (await send(fetch, free["id"], "beside"))["data"]  # its own batch, in flight beside the first
    assert sizes == [1, 1] and not first.done()
    empty = (await fetch(f"/api/chat/conversations/{held['id']}/messages", user=ALICE)).data["items"]
    assert empty == []
    later = asyncio.ensure_future(send(fetch, held["id"], "later"))
    for _ in range(QUEUE_WAIT_S * 100):
        if batcher._pending:
            break
        await asyncio.sleep(0.01)
    assert len(batcher._pending) == 1 and sizes == [1, 1]  # waits for the batch holding its conversation
    gate.set()
    first_message, later_message = (await first)["data"], (await later)["data"]
    assert sizes == [1, 1, 1]
    assert later_message["parentId"] == first_message["id"] and later_message["seq"] > first_message["seq"]
    assert beside["parentId"] is None


@pytest.mark.gen_test(timeout=60)
async def test_with_two_batches_in_flight_each_conversation_chains_its_messages_by_seq(app, fetch, monkeypatch):
    """Many concurrent sends into a few conversations, two batches in flight: in every
    conversation the messages form one chain, each answering the one before it, with no fork
    and no gap in the seqs, and the counts add up."""
    monkeypatch.setattr(app.service("chat").sends, "in_flight", 2)
    conversations = [await create_conversation(fetch) for _ in range(4)]
    per_conversation = 12
    await asyncio.gather(*(send(fetch, c["id"], f"m{n}") for n in range(per_conversation) for c in conversations))
    for conversation in conversations:
        read = (await fetch(f"/api/chat/conversations/{conversation['id']}", user=ALICE)).data
        items = (await fetch(f"/api/chat/conversations/{conversation['id']}/messages?limit=100",
                             user=ALICE)).data["items"]
        chain = sorted(items, key=lambda m: m["seq"])
        assert len(chain) == per_conversation == read["messageCount"]
        assert [m["seq"] for m in chain] == list(range(chain[0]["seq"], chain[0]["seq"] + per_conversation))
        assert [m["parentId"] for m in chain] == [None] + [m["id"] for m in chain[:-1]]
        assert read["currentMessageId"] == chain[-1]["id"]


@pytest.mark.gen_test(timeout=30)
async def test_a_batch_stores_every_character_as_sent(app, fetch):
    """The batch's rows reach the database as one quoted document (PostgreSQL, see ``bulk``):
    quotes, backslashes, percent signs (the driver's own placeholders), JSON's escapes and
    characters outside ASCII come back exactly as sent, metadata too, and are found by search."""
    conversation = await create_conversation(fetch)
    tricky = ["it's 100% \"done\" %s %% %(x)s", "back\\slash \\n {\"json\": [1]} ;DROP TABLE x; --",
              "naïve café 😀 \u2028 tab\there"]
    sent = await asyncio.gather(*(send(fetch, conversation["id"], content, metadata={"note": content})
                                  for content in tricky))
    items = (await fetch(f"/api/chat/conversations/{conversation['id']}/messages", user=ALICE)).data["items"]
    stored = {m["id"]: m for m in items}
    for answer, content in zip(sent, tricky):
        message = stored[answer["data"]["id"]]
        assert message["content"] == content and message["metadata"] == {"note": content}
    found = (await fetch("/api/chat/search?q=naïve", user=ALICE)).data["items"]
    assert [m["content"] for m in found] == [tricky[2]]
