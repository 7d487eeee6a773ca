"""Full-text search through the real server: whole words, case and accents ignored, no
stemming, kept in step with edits and deletes, scoped to the caller, safe for any input;
and the query plans of the hot queries (index scans, never a table scan)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from vachat.testing import assert_error

from .. import search as search_index
from .helpers import ALICE, BOB, create_conversation, send

HOSTILE = ['"', "'", '"unbalanced', "(", ")", "((a", "a)", "NEAR(a b)", "a AND", "OR", "NOT x", "*", "a*",
           "body:secret", "owner_id:alice", "^a", "-a", "a & b | !c", "a:*", "'a' & 'b'", "\\", "%", "_",
           ";DROP TABLE chat_message;--", "{body}: x", "\u00a0", "🙂", "x" * 200, "", " ", "a\tb"]


async def search(fetch, text: str, user: str = ALICE, **params) -> dict:
    query = "&".join([f"q={quote(text)}", *(f"{k}={v}" for k, v in params.items())])
    response = await fetch(f"/api/chat/search?{query}", user=user)
    assert response.code == 200, response.body
    return response.data


@pytest.mark.gen_test
async def test_whole_words_any_case_any_accent_no_stemming(fetch):
    conversation = await create_conversation(fetch)
    cafe = (await send(fetch, conversation["id"], "Meet me at the Café near the Straße"))["data"]
    run = (await send(fetch, conversation["id"], "running late, sorry"))["data"]
    await send(fetch, conversation["id"], "nothing to see")
    for words in ("cafe", "CAFÉ", "café", "straße", "STRASSE", "meet cafe"):
        assert [m["id"] for m in (await search(fetch, words))["items"]] == [cafe["id"]], words
    assert (await search(fetch, "caf"))["items"] == []  # whole words only
    assert (await search(fetch, "run"))["items"] == []  # no stemming
    assert [m["id"] for m in (await search(fetch, "running"))["items"]] == [run["id"]]
    assert (await search(fetch, "cafe running"))["items"] == []  # every word must appear


@pytest.mark.gen_test
async def test_ranking_paging_and_scope(fetch):
    mine = await create_conversation(fetch)
    strong = (await send(fetch, mine["id"], "apple apple apple pie"))["data"]
    weak = (await send(fetch, mine["id"], "an apple a day keeps the doctor away, they say, every day"))["data"]
    theirs = await create_conversation(fetch, user=BOB)
    await send(fetch, theirs["id"], "apple from bob", user=BOB)
    found = await search(fetch, "apple", limit=1)
    assert [m["id"] for m in found["items"]] == [strong["id"]] and found["nextCursor"] == "1"
    rest = await search(fetch, "apple", limit=10, cursor=found["nextCursor"])
    assert weak["id"] in [m["id"] for m in rest["items"]] and rest["nextCursor"] is None
    assert all(m["conversationId"] == mine["id"] for m in found["items"] + rest["items"])
    assert [m["content"] for m in (await search(fetch, "apple", user=BOB))["items"]] == ["apple from bob"]


@pytest.mark.gen_test
async def test_assistant_messages_are_found_too(app, fetch):
    conversation = await create_conversation(fetch)
    reply = await app.service("chat").store_assistant_message(conversation["id"], "Zürich is lovely")
    assert [m["id"] for m in (await search(fetch, "zurich"))["items"]] == [reply["id"]]


async def noted_and_indexed(app, waiting_table: bool = True) -> tuple[set[str], set[str]]:
    """The ids of the messages waiting for their entry (SQLite, ``waiting_table``), and of
    those with one."""
    def read() -> tuple[set[str], set[str]]:
        engine = app.db.engine
        if app.db.is_postgres:
            return set(), {row[0] for row in engine.execute_sql("SELECT message_id FROM chat_message_search")}
        waiting = engine.execute_sql(f"SELECT message_id FROM {search_index.PENDING_TABLE}") if waiting_table else []
        return ({row[0] for row in waiting},
                {row[0] for row in engine.execute_sql("SELECT message_id FROM chat_message_fts")})

    return await app.db.run(read)


@pytest.mark.gen_test
async def test_entries_are_written_a_batch_at_a_time(app, fetch, monkeypatch):
    """SQLite: a send notes its message, and the send that brings the count to INDEX_BATCH
    writes the entries of every message waiting, in its own transaction. PostgreSQL writes
    each entry with its message."""
    monkeypatch.setattr(search_index, "INDEX_BATCH", 3)
    monkeypatch.setattr(search_index._Noted, "count", 0)
    conversation = await create_conversation(fetch)
    first = {(await send(fetch, conversation["id"], f"batched words {n}"))["data"]["id"] for n in range(2)}
    postgres = app.db.is_postgres
    assert await noted_and_indexed(app) == ((set(), first) if postgres else (first, set()))
    # An assistant's reply is noted as a send is: the third, so its insert writes all three.
    reply = await app.service("chat").store_assistant_message(conversation["id"], "batched reply")
    assert await noted_and_indexed(app) == (set(), first | {reply["id"]})
    last = (await send(fetch, conversation["id"], "batched words again"))["data"]["id"]
    if not postgres:
        assert await noted_and_indexed(app) == ({last}, first | {reply["id"]})
    found = await search(fetch, "batched")
    assert {m["id"] for m in found["items"]} == first | {reply["id"], last}
    assert await noted_and_indexed(app) == (set(), first | {reply["id"], last})


@pytest.mark.gen_test
async def test_a_search_finds_what_waits_as_it_reads_now(app, fetch, monkeypatch):
    """Messages stored before a search are found by it, waiting or not (a restart starts
    the count at 0: the table is what counts); a waiting message edited meanwhile is found by
    its new words only, one deleted is not found."""
    monkeypatch.setattr(search_index._Noted, "count", 0)
    conversation = await create_conversation(fetch)
    kept, edited, deleted = [(await send(fetch, conversation["id"], f"pending {word}"))["data"]
                             for word in ("kept", "edited", "deleted")]
    await fetch(f"/api/chat/messages/{edited['id']}", method="PUT", json={"content": "pending revised"}, user=ALICE)
    await fetch(f"/api/chat/messages/{deleted['id']}", method="DELETE", user=ALICE)
    assert [m["id"] for m in (await search(fetch, "pending"))["items"]] in (
        [kept["id"], edited["id"]], [edited["id"], kept["id"]])
    assert (await search(fetch, "edited"))["items"] == [] and (await search(fetch, "deleted"))["items"] == []
    assert await noted_and_indexed(app) == (set(), {kept["id"], edited["id"]})


@pytest.mark.gen_test
async def test_rolling_back_the_waiting_table_keeps_its_messages_searchable(app, fetch):
    """SQLite: the rollback writes the waiting entries, then drops the table. PostgreSQL has
    no such table (its entries are written with each message): the rollback changes nothing."""
    conversation = await create_conversation(fetch)
    waiting = (await send(fetch, conversation["id"], "written by the rollback"))["data"]
    migrations = app.migrations()
    assert await app.db.run(migrations.rollback, "chat", 1) == ["006_search_pending"]
    try:
        assert search_index.PENDING_TABLE not in await app.db.run(app.db.engine.get_tables)
        assert (await noted_and_indexed(app, waiting_table=False))[1] == {waiting["id"]}
    finally:
        await app.db.run(migrations.apply, "chat")
    assert [m["id"] for m in (await search(fetch, "rollback"))["items"]] == [waiting["id"]]
    assert await noted_and_indexed(app) == (set(), {waiting["id"]})


@pytest.mark.parametrize("batch", [1, search_index.INDEX_BATCH], ids=["indexed", "waiting"])
@pytest.mark.gen_test
async def test_index_follows_edits_and_deletes(fetch, monkeypatch, batch):
    monkeypatch.setattr(search_index, "INDEX_BATCH", batch)
    conversation = await create_conversation(fetch)
    message = (await send(fetch, conversation["id"], "original wording"))["data"]
    await fetch(f"/api/chat/messages/{message['id']}", method="PUT", json={"content": "revised text"}, user=ALICE)
    assert (await search(fetch, "original"))["items"] == []
    assert [m["content"] for m in (await search(fetch, "revised"))["items"]] == ["revised text"]
    await fetch(f"/api/chat/messages/{message['id']}", method="DELETE", user=ALICE)
    assert (await search(fetch, "revised"))["items"] == []
    other = (await send(fetch, conversation["id"], "gone with the conversation"))["data"]
    assert (await search(fetch, "conversation"))["items"][0]["id"] == other["id"]
    await fetch(f"/api/chat/conversations/{conversation['id']}", method="DELETE", user=ALICE)
    assert (await search(fetch, "conversation"))["items"] == []


@pytest.mark.gen_test
async def test_hostile_queries_are_just_words(fetch):
    conversation = await create_conversation(fetch)
    target = (await send(fetch, conversation["id"], 'she said "hello" (twice) AND left; a*b body:secret'))["data"]
    for text in HOSTILE:
        result = await search(fetch, text)
        assert isinstance(result["items"], list), text
    assert [m["id"] for m in (await search(fetch, '"hello" AND (twice'))["items"]] == [target["id"]]
    assert [m["id"] for m in (await search(fetch, "body:secret"))["items"]] == [target["id"]]
    assert (await search(fetch, "OR"))["items"] == []
    assert_error(await fetch("/api/chat/search?q=a%00b", user=ALICE), 400, "VALIDATION_FAILED")
    assert_error(await fetch("/api/chat/search", user=ALICE), 400, "VALIDATION_FAILED")
    assert_error(await fetch(f"/api/chat/search?q={'x' * 201}", user=ALICE), 400, "VALIDATION_FAILED")
    assert_error(await fetch("/api/chat/search?q=a&cursor=-1", user=ALICE), 400, "VALIDATION_FAILED")


ORDERED_INDEX_SCAN = ("enable_seqscan", "enable_bitmapscan", "enable_sort")


def plan(app, sql: str, params: tuple, switched_off: tuple[str, ...] = ORDERED_INDEX_SCAN) -> str:
    engine = app.db.engine
    if app.db.is_postgres:
        with engine.atomic():
            # Tables this small are cheapest to read whole or through any index and sort; what
            # the test shows is that an index serves each query, filter and order alike.
            # (A GIN index is read through a bitmap: that query keeps bitmap scans.)
            for setting in switched_off:
                engine.execute_sql(f"SET LOCAL {setting} = off")
            rows = engine.execute_sql("EXPLAIN " + sql, params).fetchall()
        return "\n".join(row[0] for row in rows)
    rows = engine.execute_sql("EXPLAIN QUERY PLAN " + sql.replace("%s", "?"), params).fetchall()
    return "\n".join(row[-1] for row in rows)


def assert_index_scan(text: str, *needles: str) -> None:
    for line in text.splitlines():
        assert "Seq Scan" not in line, text
        assert not (line.strip().startswith("SCAN ") and "VIRTUAL TABLE" not in line and "USING" not in line), text
    for needle in needles:
        assert needle in text, (needle, text)


@pytest.mark.gen_test
async def test_hot_queries_are_index_scans(app, fetch):
    conversation = await create_conversation(fetch, tags=["work"])
    for n in range(30):
        await send(fetch, conversation["id"], f"message {n}")
    for user in ("bob", "carol", "dave"):
        other = await create_conversation(fetch, user=user, tags=["work"])
        for n in range(10):
            await send(fetch, other["id"], f"message {n}", user=user)
    cid, owner = conversation["id"], ALICE
    # PostgreSQL: fresh statistics (seq scans are switched off per query in plan()). SQLite
    # plans by its built-in estimates, which favour indexes, unless statistics exist.
    statistics = "ANALYZE" if app.db.is_postgres else "DROP TABLE IF EXISTS sqlite_stat1"
    await app.db.run(lambda: app.db.engine.execute_sql(statistics))
    checks = [
        # cursor page of messages
        ("SELECT id FROM chat_message WHERE conversation_id = %s AND deleted_at IS NULL AND id < %s "
         "ORDER BY id DESC LIMIT 51", (cid, "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"), "chatmessage_conversation_id_id"),
        # the conversation list
        ("SELECT id FROM chat_conversation WHERE owner_id = %s AND is_archived = %s "
         "ORDER BY updated_at DESC, id DESC LIMIT 20", (owner, False), "chatconversation_owner_id_is_archived_updated_at_id"),
        # the tag filter
        ("SELECT conversation_id FROM chat_conversation_tag WHERE owner_id = %s AND tag = %s", (owner, "work"),
         "chatconversationtag_owner_id_tag_conversation_id"),
        # a user's messages
        ("SELECT id FROM chat_message WHERE user_id = %s", (owner,), "chatmessage_user_id"),
        # the retry check of a send batch (a partial index: only messages with a clientMessageId)
        ("SELECT id FROM chat_message WHERE conversation_id IN (%s) AND client_message_id IN (%s, %s)",
         (cid, "c-1", "c-2"), "chatmessage_conversation_id_client_message_id"),
        # the replay of edits and deletes
        ("SELECT id FROM chat_message WHERE conversation_id = %s AND updated_at > %s", (cid, "2999-01-01"),
         "chatmessage_conversation_id_updated_at"),
    ]
    for sql, params, index in checks:
        text = await app.db.run(plan, app, sql, params)
        assert_index_scan(text, index)
    if app.db.is_postgres:
        text = await app.db.run(plan, app, "SELECT message_id FROM chat_message_search WHERE document @@ %s::tsquery",
                                ("'message'",), ("enable_seqscan",))
        assert_index_scan(text, "chat_message_search_document")
    else:
        text = await app.db.run(plan, app, "SELECT message_id FROM chat_message_fts WHERE chat_message_fts MATCH %s",
                                ('body : "message"',))
        assert "VIRTUAL TABLE INDEX" in text, text
