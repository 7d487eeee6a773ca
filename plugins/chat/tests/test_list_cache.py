"""The conversation list answered from the pages a node keeps (``listing.ListCache``): after
every kind of write, on this node, by the database directly or by another server process
sharing the database, the very next list shows it; an unchanged list is not read again;
decoration never reaches what is kept; the memory bound holds."""

from __future__ import annotations

import pytest

from vachat.testing import needs_shared_services

from .. import listing
from . import hooked_plugin
from .helpers import ALICE, BOB, create_conversation, send

LIST = "/api/chat/conversations?limit=20"


@pytest.fixture
def page_reads(monkeypatch):
    """How many times the page was read from the database (not answered from the cache)."""
    reads = []
    real = listing.read_page

    def counted(*args, **kwargs):
        reads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(listing, "read_page", counted)
    return reads


async def listed(fetch, path=LIST, user=ALICE):
    response = await fetch(path, user=user)
    assert response.code == 200, response.json
    return response.data


def by_id(items):
    return {c["id"]: c for c in items}


@pytest.mark.gen_test(timeout=60)
async def test_list_shows_every_write_on_the_next_request(fetch, app, page_reads):
    chat = app.service("chat")
    first = await create_conversation(fetch, title="first")
    second = await create_conversation(fetch, title="second")
    assert [c["id"] for c in await listed(fetch)] == [second["id"], first["id"]]
    assert await listed(fetch) == await listed(fetch)
    assert len(page_reads) == 1, "an unchanged list must be answered from the page kept"

    async def changed(what):
        before = len(page_reads)
        items = await listed(fetch)
        assert len(page_reads) == before + 1, f"{what}: the list was not read again"
        return by_id(items)

    sent = (await send(fetch, first["id"], "hello", files=["file-a"]))["data"]
    shown = await changed("send")
    assert shown[first["id"]]["lastMessage"]["content"] == "hello" and shown[first["id"]]["messageCount"] == 1
    assert shown[first["id"]]["lastMessage"]["files"] == [{"id": "file-a"}]
    assert (await listed(fetch))[0]["id"] == first["id"]  # most recently updated first

    edited = await fetch(f"/api/chat/messages/{sent['id']}", method="PUT", user=ALICE, json={"content": "hello again"})
    assert edited.code == 200, edited.json
    shown = await changed("edit of the last message")
    assert shown[first["id"]]["lastMessage"]["content"] == "hello again"
    assert shown[first["id"]]["lastMessage"]["isEdited"] is True

    # A file link of the last message, removed by the database directly (no chat code path).
    app.db.engine.execute_sql("DELETE FROM chat_message_file WHERE file_id = 'file-a'")
    shown = await changed("file link deleted")
    assert shown[first["id"]]["lastMessage"]["files"] == []

    reply = await chat.store_assistant_message(first["id"], "an AI reply")
    shown = await changed("assistant reply")
    assert shown[first["id"]]["lastMessage"]["id"] == reply["id"]
    assert shown[first["id"]]["lastMessage"]["role"] == "assistant"

    deleted = await fetch(f"/api/chat/messages/{reply['id']}", method="DELETE", user=ALICE)
    assert deleted.code == 200, deleted.json
    shown = await changed("delete of the last message")
    assert shown[first["id"]]["lastMessage"]["id"] != reply["id"]

    renamed = await fetch(f"/api/chat/conversations/{second['id']}", method="PUT", user=ALICE,
                          json={"title": "renamed", "tags": ["work"]})
    assert renamed.code == 200, renamed.json
    shown = await changed("rename and tags")
    assert shown[second["id"]]["title"] == "renamed" and shown[second["id"]]["tags"] == ["work"]
    assert [c["id"] for c in await listed(fetch, LIST + "&tag=work")] == [second["id"]]
    await fetch(f"/api/chat/conversations/{first['id']}", method="PUT", user=ALICE, json={"tags": ["work"]})
    assert {c["id"] for c in await listed(fetch, LIST + "&tag=work")} == {first["id"], second["id"]}

    archived = await fetch(f"/api/chat/conversations/{second['id']}", method="PUT", user=ALICE,
                           json={"isArchived": True})
    assert archived.code == 200, archived.json
    assert set(await changed("archive")) == {first["id"]}
    assert [c["id"] for c in await listed(fetch, LIST + "&archived=true")] == [second["id"]]

    gone = await fetch(f"/api/chat/conversations/{first['id']}", method="DELETE", user=ALICE)
    assert gone.code == 200, gone.json
    assert await changed("conversation deleted") == {}


@pytest.mark.gen_test(timeout=60)
async def test_account_deletion_elsewhere_reaches_other_owners_lists(fetch, app, page_reads):
    # Bob's message is the last of Alice's public conversation... he cannot write to it, so
    # the trusted path stores it as his (a message of another user in Alice's conversation).
    mine = await create_conversation(fetch, title="mine")
    await send(fetch, mine["id"], "alice writes")
    app.db.engine.execute_sql(
        "UPDATE chat_message SET user_id = 'bob' WHERE conversation_id = " + app.db.engine.param, (mine["id"],))
    assert (await listed(fetch))[0]["lastMessage"]["userId"] == BOB
    await app.service("chat").delete_user_data(BOB)
    assert (await listed(fetch))[0]["lastMessage"] is None  # his message went with his account


@pytest.mark.gen_test(timeout=60)
@pytest.mark.vachat(plugins=["chat", ("hooked", hooked_plugin)])
async def test_decoration_never_reaches_the_page_kept(fetch, app):
    hooked_plugin.reset()
    conversation = await create_conversation(fetch)
    await send(fetch, conversation["id"], "with a file", files=["file-b"])
    for _ in range(3):
        assert (await listed(fetch))[0]["lastMessage"]["files"] == [{"id": "file-b", "name": "file-b.txt"}]
    kept = app.service("chat").list_pages
    assert len(kept) == 1
    (version, items, total, size), = kept._pages.values()
    assert items[0]["lastMessage"]["files"] == [{"id": "file-b"}] and total == 1


@pytest.mark.gen_test(timeout=120)
async def test_a_write_by_another_server_process_is_shown_here(fetch, server_process, page_reads):
    # On SQLite the other process shares the database file; on PostgreSQL the database.
    conversation = await create_conversation(fetch, title="here")
    assert (await listed(fetch))[0]["title"] == "here"
    assert (await listed(fetch))[0]["title"] == "here"
    assert len(page_reads) == 1
    other = server_process({"VACHAT_PLUGINS": "chat,testauth"})
    await other.wait_ready()
    headers = {"Authorization": f"Bearer test:{ALICE}"}
    renamed = await other.fetch(f"/api/chat/conversations/{conversation['id']}", method="PUT",
                                json={"title": "there"}, headers=headers)
    assert renamed.code == 200, renamed.json
    posted = await other.fetch("/api/chat/message", method="POST", headers=headers,
                               json={"conversationId": conversation["id"], "content": "from the other node"})
    assert posted.code == 201, posted.json
    shown = (await listed(fetch))[0]
    assert shown["title"] == "there" and shown["lastMessage"]["content"] == "from the other node"
    assert len(page_reads) == 2


@needs_shared_services
@pytest.mark.gen_test(timeout=120)
async def test_two_server_processes_each_show_the_others_writes(server_process):
    env = {"VACHAT_PLUGINS": "chat,testauth"}
    first, second = server_process(env), server_process(env)
    await first.wait_ready()
    await second.wait_ready()
    headers = {"Authorization": f"Bearer test:{ALICE}"}
    created = await first.fetch("/api/chat/conversations", method="POST", json={"title": "one"}, headers=headers)
    cid = created.data["id"]
    for node in (first, second, first, second):  # each keeps its page
        assert (await node.fetch(LIST, headers=headers)).data[0]["title"] == "one"
    for writer, reader, title in ((first, second, "two"), (second, first, "three")):
        assert (await writer.fetch(f"/api/chat/conversations/{cid}", method="PUT", json={"title": title},
                                   headers=headers)).code == 200
        assert (await reader.fetch(LIST, headers=headers)).data[0]["title"] == title


@pytest.mark.vachat(config={"plugin_sections": {"chat": {"list_cache_bytes": 0}}})
@pytest.mark.gen_test(timeout=60)
async def test_a_cache_of_0_bytes_reads_every_page(fetch, app, page_reads):
    await create_conversation(fetch, title="first")
    assert await listed(fetch) == await listed(fetch)
    assert len(page_reads) == 2 and len(app.service("chat").list_pages) == 0


@pytest.mark.vachat(config={"plugin_sections": {"chat": {"list_cache_bytes": 1024 * 1024}}})
@pytest.mark.gen_test(timeout=60)
async def test_the_setting_bounds_the_cache(fetch, app):
    assert app.service("chat").list_pages.max_bytes == 1024 * 1024


def test_memory_bound():
    cache = listing.ListCache(max_bytes=64 * 1024)
    items = [{"id": "x"}]
    for n in range(500):
        cache.put(("owner", n), 1, items, 1, 1000)
        assert cache.size <= cache.max_bytes
    assert 0 < len(cache) <= cache.max_bytes // (1000 + listing.PAGE_OVERHEAD)
    assert cache.get(("owner", 0), 1) is None  # the least recently used went first
    assert cache.get(("owner", 499), 1) == (items, 1)
    assert cache.get(("owner", 499), 2) is None  # another version: not answered
    cache.put(("owner", "big"), 1, items, 1, cache.max_bytes // 8)  # too large to keep
    assert cache.get(("owner", "big"), 1) is None
    cache.put(("owner", 499), 2, items, 3, 10)  # replacing counts the old one out
    cache.put(("owner", 499), 1, items, 4, 10)  # an older read finishing late does not replace it
    assert cache.get(("owner", 499), 2) == (items, 3)
    assert cache.size == sum(entry[3] for entry in cache._pages.values())


def test_answers_share_nothing_mutable_with_the_page_kept():
    message = {"id": "m", "metadata": {"deep": {"list": [1]}}, "files": [{"id": "f"}]}
    kept = [{"id": "c", "tags": ["t"], "metadata": {"a": [1]}, "lastMessage": message}]
    answer = listing._copy_page(kept)
    assert answer == kept
    answer[0]["tags"].append("u")
    answer[0]["metadata"]["a"].append(2)
    answer[0]["lastMessage"]["metadata"]["deep"]["list"].append(2)
    answer[0]["lastMessage"]["files"][0]["name"] = "f.txt"
    answer[0]["lastMessage"]["files"].append({"id": "g"})
    answer[0]["lastMessage"]["extra"] = True
    assert kept == [{"id": "c", "tags": ["t"], "metadata": {"a": [1]},
                     "lastMessage": {"id": "m", "metadata": {"deep": {"list": [1]}}, "files": [{"id": "f"}]}}]
