"""The chat REST API through the real server: conversations, messages, pages, edits, deletes,
idempotent sends, ownership on every route, and bad input."""

from __future__ import annotations

import asyncio

import pytest

from vachat.testing import assert_error, error_fields

from .helpers import ALICE, BOB, MISSING_ID, READ_ALL, create_conversation, send


@pytest.mark.gen_test
async def test_conversation_lifecycle(fetch):
    created = await create_conversation(fetch, title="Trip", description="Rome", tags=["travel", "2025"],
                                        metadata={"systemPrompt": "be brief"})
    assert created["title"] == "Trip" and created["tags"] == ["2025", "travel"]
    assert created["ownerId"] == ALICE and created["messageCount"] == 0 and created["lastMessage"] is None
    assert created["metadata"] == {"systemPrompt": "be brief"} and created["isPublic"] is False
    read = await fetch(f"/api/chat/conversations/{created['id']}", user=ALICE)
    assert read.code == 200 and read.data == created
    changed = await fetch(f"/api/chat/conversations/{created['id']}", method="PUT", user=ALICE,
                          json={"title": "Trip to Rome", "tags": ["italy"], "isArchived": True})
    assert changed.code == 200
    assert changed.data["title"] == "Trip to Rome" and changed.data["tags"] == ["italy"] and changed.data["isArchived"]
    deleted = await fetch(f"/api/chat/conversations/{created['id']}", method="DELETE", user=ALICE)
    assert deleted.code == 200 and deleted.json == {"success": True, "data": None}
    assert_error(await fetch(f"/api/chat/conversations/{created['id']}", user=ALICE), 404, "NOT_FOUND")


@pytest.mark.gen_test
async def test_send_edit_delete_message(fetch):
    conversation = await create_conversation(fetch)
    first = (await send(fetch, conversation["id"], "first"))["data"]
    assert first["role"] == "user" and first["userId"] == ALICE and first["parentId"] is None
    assert first["isEdited"] is False and first["editedAt"] is None and first["files"] == []
    second = (await send(fetch, conversation["id"], "second", metadata={"k": 1}))["data"]
    assert second["parentId"] == first["id"] and second["metadata"] == {"k": 1}
    listed = (await fetch(f"/api/chat/conversations/{conversation['id']}", user=ALICE)).data
    assert listed["messageCount"] == 2 and listed["lastMessage"]["id"] == second["id"]
    assert listed["currentMessageId"] == second["id"]
    edited = await fetch(f"/api/chat/messages/{first['id']}", method="PUT", json={"content": "first!"}, user=ALICE)
    assert edited.code == 200 and edited.data["content"] == "first!" and edited.data["isEdited"] is True
    assert edited.data["editedAt"] is not None
    deleted = await fetch(f"/api/chat/messages/{second['id']}", method="DELETE", user=ALICE)
    assert deleted.code == 200 and deleted.json == {"success": True, "data": None}
    page = (await fetch(f"/api/chat/conversations/{conversation['id']}/messages", user=ALICE)).data
    assert [m["id"] for m in page["items"]] == [first["id"]] and page["nextCursor"] is None
    after = (await fetch(f"/api/chat/conversations/{conversation['id']}", user=ALICE)).data
    assert after["messageCount"] == 1 and after["lastMessage"]["id"] == first["id"]
    assert after["currentMessageId"] == first["id"]  # the leaf moved back to the parent
    assert_error(await fetch(f"/api/chat/messages/{second['id']}", method="DELETE", user=ALICE), 404, "NOT_FOUND")
    assert_error(await fetch(f"/api/chat/messages/{second['id']}", method="PUT", json={"content": "x"}, user=ALICE),
                 404, "NOT_FOUND")


@pytest.mark.gen_test
async def test_message_pages_by_cursor_newest_first(fetch):
    conversation = await create_conversation(fetch)
    ids = [(await send(fetch, conversation["id"], f"m{n}"))["data"]["id"] for n in range(7)]
    base = f"/api/chat/conversations/{conversation['id']}/messages"
    first = (await fetch(f"{base}?limit=3", user=ALICE)).data
    assert [m["id"] for m in first["items"]] == ids[6:3:-1] and first["nextCursor"] == ids[4]
    second = (await fetch(f"{base}?limit=3&before={first['nextCursor']}", user=ALICE)).data
    assert [m["id"] for m in second["items"]] == ids[3:0:-1] and second["nextCursor"] == ids[1]
    last = (await fetch(f"{base}?limit=3&before={second['nextCursor']}", user=ALICE)).data
    assert [m["id"] for m in last["items"]] == [ids[0]] and last["nextCursor"] is None
    newer = (await fetch(f"{base}?limit=2&after={ids[1]}", user=ALICE)).data
    assert [m["id"] for m in newer["items"]] == [ids[3], ids[2]] and newer["nextCursor"] == ids[3]
    rest = (await fetch(f"{base}?limit=10&after={newer['nextCursor']}", user=ALICE)).data
    assert [m["id"] for m in rest["items"]] == ids[6:3:-1] and rest["nextCursor"] is None
    for bad in ("limit=0", "limit=201", "limit=x", "before=nope", f"before={ids[0]}&after={ids[1]}", "extra=1"):
        assert_error(await fetch(f"{base}?{bad}", user=ALICE), 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
async def test_conversation_list_pages_sorts_and_filters(fetch):
    made = []
    for n in range(5):
        made.append(await create_conversation(fetch, title=f"chat {n}", tags=["work"] if n % 2 else ["home"]))
    await create_conversation(fetch, title="archived one", isArchived=True)
    await create_conversation(fetch, user=BOB, title="bob's")
    await send(fetch, made[0]["id"], "bump")  # activity moves it to the top of updatedAt
    page = await fetch("/api/chat/conversations?limit=2", user=ALICE)
    assert page.code == 200 and page.json["pagination"] == {"page": 1, "limit": 2, "total": 5, "totalPages": 3}
    assert [c["id"] for c in page.data] == [made[0]["id"], made[4]["id"]]
    assert page.data[0]["lastMessage"]["content"] == "bump" and page.data[0]["messageCount"] == 1
    by_title = (await fetch("/api/chat/conversations?sortBy=title&sortOrder=asc&limit=100", user=ALICE)).data
    assert [c["title"] for c in by_title] == [f"chat {n}" for n in range(5)]
    work = (await fetch("/api/chat/conversations?tag=work", user=ALICE)).data
    assert sorted(c["title"] for c in work) == ["chat 1", "chat 3"]
    archived = (await fetch("/api/chat/conversations?archived=true", user=ALICE)).data
    assert [c["title"] for c in archived] == ["archived one"]
    # ownerId and isArchived are the values the page's filter matched, not read per row
    assert archived[0] == (await fetch(f"/api/chat/conversations/{archived[0]['id']}", user=ALICE)).data
    assert archived[0]["isArchived"] is True and archived[0]["ownerId"] == ALICE
    found = (await fetch("/api/chat/conversations?search=chat%203", user=ALICE)).data
    assert [c["title"] for c in found] == ["chat 3"]
    for bad in ("sortBy=ownerId", "sortBy=id;drop", "sortOrder=up", "page=0", "limit=101", "unknown=1", "archived=maybe"):
        assert_error(await fetch(f"/api/chat/conversations?{bad}", user=ALICE), 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
async def test_list_items_are_the_conversations_as_read_one_by_one(fetch):
    bare = await create_conversation(fetch, title="no messages")
    rich = await create_conversation(fetch, title="Rich", description="d", tags=["b", "a"], metadata={"k": [1]})
    await send(fetch, rich["id"], "with files", files=["file-1", "file-2"], metadata={"m": True})
    edited = (await send(fetch, rich["id"], "last"))["data"]
    await fetch(f"/api/chat/messages/{edited['id']}", method="PUT", json={"content": "last!"}, user=ALICE)
    plain = await create_conversation(fetch, title="plain")
    await send(fetch, plain["id"], "hello")
    listed = (await fetch("/api/chat/conversations?limit=100", user=ALICE)).data
    assert [c["id"] for c in listed] == [plain["id"], rich["id"], bare["id"]]
    for item in listed:
        assert item == (await fetch(f"/api/chat/conversations/{item['id']}", user=ALICE)).data
    assert listed[1]["lastMessage"]["isEdited"] is True and listed[1]["tags"] == ["a", "b"]


@pytest.mark.gen_test
async def test_list_search_takes_wildcards_literally(fetch):
    for title in ("100% done", "100 done", "a_b", "axb", "Case Title"):
        await create_conversation(fetch, title=title)

    async def titles(text: str) -> list[str]:
        return sorted(c["title"] for c in (await fetch(f"/api/chat/conversations?search={text}", user=ALICE)).data)

    assert await titles("%25") == ["100% done"]
    assert await titles("a_b") == ["a_b"]
    assert await titles("case%20title") == ["Case Title"]
    assert await titles("%5C") == []


@pytest.mark.gen_test
async def test_list_uses_a_constant_number_of_queries(app, fetch):
    for n in range(12):
        conversation = await create_conversation(fetch, title=f"c{n}", tags=["a", "b"])
        await send(fetch, conversation["id"], f"hello {n}", files=[f"file{n}"])
    engine = app.db.engine
    counted: list[str] = []
    original = engine.execute_sql

    def counting(sql, *args, **kwargs):
        counted.append(sql)
        return original(sql, *args, **kwargs)

    engine.execute_sql = counting
    try:
        counts = []
        for limit in (1, 12):
            counted.clear()
            page = await fetch(f"/api/chat/conversations?limit={limit}", user=ALICE)
            assert len(page.data) == limit and all(c["lastMessage"]["files"] for c in page.data)
            counts.append(len(counted))
    finally:
        del engine.execute_sql
    # At most 5 whatever the page size; a page that is the last one needs no COUNT.
    assert counts[0] <= 5 and counts[1] == counts[0] - 1, counts


@pytest.mark.gen_test
async def test_client_message_id_makes_retries_safe(app, fetch, ws_connect):
    conversation = await create_conversation(fetch)
    first = await send(fetch, conversation["id"], "once", clientMessageId="c-1")
    again = await send(fetch, conversation["id"], "once", clientMessageId="c-1", expect=200)
    assert again["data"] == first["data"]
    different = await fetch("/api/chat/message", method="POST", user=ALICE,
                            json={"conversationId": conversation["id"], "content": "other", "clientMessageId": "c-1"})
    assert_error(different, 409, "CONFLICT")
    # Racing retries: all arrive before any is stored; exactly one is created.
    racing = await asyncio.gather(*[
        fetch("/api/chat/message", method="POST", user=ALICE,
              json={"conversationId": conversation["id"], "content": "race", "clientMessageId": "c-2"})
        for _ in range(8)])
    assert sorted(r.code for r in racing) == [200] * 7 + [201]
    assert len({r.data["id"] for r in racing}) == 1
    page = (await fetch(f"/api/chat/conversations/{conversation['id']}/messages", user=ALICE)).data
    assert [m["content"] for m in page["items"]] == ["race", "once"]
    assert (await fetch(f"/api/chat/conversations/{conversation['id']}", user=ALICE)).data["messageCount"] == 2


@pytest.mark.gen_test
async def test_a_requested_ai_reply_without_an_ai_plugin_is_refused_before_storing(fetch):
    conversation = await create_conversation(fetch)
    refused = await fetch("/api/chat/message", method="POST", user=ALICE,
                          json={"conversationId": conversation["id"], "content": "hi", "requiresAIResponse": True})
    body = assert_error(refused, 409, "CONFLICT")
    assert "no AI plugin" in body["error"]
    assert (await fetch(f"/api/chat/conversations/{conversation['id']}", user=ALICE)).data["messageCount"] == 0


@pytest.mark.gen_test
async def test_branches_parent_and_current_message(fetch):
    conversation = await create_conversation(fetch)
    root = (await send(fetch, conversation["id"], "root"))["data"]
    left = (await send(fetch, conversation["id"], "left"))["data"]
    right = (await send(fetch, conversation["id"], "right", parentId=root["id"]))["data"]
    assert left["parentId"] == right["parentId"] == root["id"]
    moved = await fetch(f"/api/chat/conversations/{conversation['id']}", method="PUT", user=ALICE,
                        json={"currentMessageId": left["id"]})
    assert moved.data["currentMessageId"] == left["id"]
    other = await create_conversation(fetch)
    foreign = (await send(fetch, other["id"], "elsewhere"))["data"]
    bad_parent = await fetch("/api/chat/message", method="POST", user=ALICE,
                             json={"conversationId": conversation["id"], "content": "x", "parentId": foreign["id"]})
    assert error_fields(assert_error(bad_parent, 400, "VALIDATION_FAILED")) == {"parentId": "is not a message of this conversation"}
    bad_leaf = await fetch(f"/api/chat/conversations/{conversation['id']}", method="PUT", user=ALICE,
                           json={"currentMessageId": foreign["id"]})
    assert_error(bad_leaf, 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
async def test_bad_input_gets_4xx(fetch):
    conversation = await create_conversation(fetch)
    cases = [
        ("/api/chat/conversations", "POST", {"title": 5}),
        ("/api/chat/conversations", "POST", {"title": "x" * 201}),
        ("/api/chat/conversations", "POST", {"tags": ["ok", "ok"]}),
        ("/api/chat/conversations", "POST", {"tags": [" padded"]}),
        ("/api/chat/conversations", "POST", {"tags": [f"t{n}" for n in range(21)]}),
        ("/api/chat/conversations", "POST", {"metadata": [1]}),
        ("/api/chat/conversations", "POST", {"ownerId": BOB}),
        (f"/api/chat/conversations/{conversation['id']}", "PUT", {}),
        (f"/api/chat/conversations/{conversation['id']}", "PUT", {"title": ""}),
        ("/api/chat/message", "POST", {}),
        ("/api/chat/message", "POST", {"conversationId": conversation["id"]}),
        ("/api/chat/message", "POST", {"conversationId": conversation["id"], "content": "   "}),
        ("/api/chat/message", "POST", {"conversationId": conversation["id"], "content": "x" * 32001}),
        ("/api/chat/message", "POST", {"conversationId": conversation["id"], "content": "x", "type": "error"}),
        ("/api/chat/message", "POST", {"conversationId": conversation["id"], "content": 5}),
        ("/api/chat/message", "POST", {"conversationId": "not-an-id", "content": "x"}),
        ("/api/chat/message", "POST", {"conversationId": conversation["id"], "content": "x", "files": ["../etc"]}),
        ("/api/chat/message", "POST", {"conversationId": conversation["id"], "content": "x", "clientMessageId": ""}),
        ("/api/chat/message", "POST", {"conversationId": conversation["id"], "content": "x", "userId": BOB}),
        ("/api/chat/message", "POST", {"conversationId": conversation["id"], "content": "x", "metadata": {str(n): n for n in range(33)}}),
    ]
    for path, method, body in cases:
        response = await fetch(path, method=method, json=body, user=ALICE)
        assert_error(response, 400, "VALIDATION_FAILED")
    assert_error(await fetch("/api/chat/message", method="POST", body="{nope", user=ALICE,
                             headers={"Content-Type": "application/json"}), 400, "VALIDATION_FAILED")
    assert_error(await fetch("/api/chat/message", method="POST", body="x", user=ALICE,
                             headers={"Content-Type": "text/plain"}), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_error(await fetch("/api/chat/conversations"), 401, "UNAUTHORIZED")
    assert (await fetch(f"/api/chat/conversations/{conversation['id']}", user=ALICE)).data["messageCount"] == 0


@pytest.mark.gen_test
async def test_other_users_ids_are_not_found_on_every_route(fetch):
    private = await create_conversation(fetch, title="secret")
    message = (await send(fetch, private["id"], "secret words"))["data"]
    cid, mid = private["id"], message["id"]
    for user in (BOB,):
        for path, method, body in [
            (f"/api/chat/conversations/{cid}", "GET", None),
            (f"/api/chat/conversations/{cid}", "PUT", {"title": "mine"}),
            (f"/api/chat/conversations/{cid}", "DELETE", None),
            (f"/api/chat/conversations/{cid}/messages", "GET", None),
            ("/api/chat/message", "POST", {"conversationId": cid, "content": "intrude"}),
            (f"/api/chat/messages/{mid}", "PUT", {"content": "edited"}),
            (f"/api/chat/messages/{mid}", "DELETE", None),
            (f"/api/chat/conversations/{MISSING_ID}", "GET", None),
            (f"/api/chat/messages/{MISSING_ID}", "DELETE", None),
        ]:
            body_ = assert_error(await fetch(path, method=method, json=body, user=user), 404, "NOT_FOUND")
            assert "secret" not in str(body_)
    listed = (await fetch("/api/chat/conversations", user=BOB)).data
    assert listed == []
    assert (await fetch("/api/chat/search?q=secret", user=BOB)).data["items"] == []
    unchanged = (await fetch(f"/api/chat/conversations/{cid}", user=ALICE)).data
    assert unchanged["title"] == "secret" and unchanged["messageCount"] == 1
    assert unchanged["lastMessage"]["content"] == "secret words"


@pytest.mark.gen_test
async def test_public_is_readable_not_writable_and_read_all_reads_any(fetch):
    public = await create_conversation(fetch, title="open", isPublic=True)
    private = await create_conversation(fetch, title="closed")
    message = (await send(fetch, public["id"], "hello all"))["data"]
    assert (await fetch(f"/api/chat/conversations/{public['id']}", user=BOB)).code == 200
    page = await fetch(f"/api/chat/conversations/{public['id']}/messages", user=BOB)
    assert [m["id"] for m in page.data["items"]] == [message["id"]]
    for path, method, body in [
        (f"/api/chat/conversations/{public['id']}", "PUT", {"title": "mine"}),
        (f"/api/chat/conversations/{public['id']}", "DELETE", None),
        ("/api/chat/message", "POST", {"conversationId": public["id"], "content": "me too"}),
        (f"/api/chat/messages/{message['id']}", "PUT", {"content": "changed"}),
        (f"/api/chat/messages/{message['id']}", "DELETE", None),
    ]:
        assert_error(await fetch(path, method=method, json=body, user=BOB), 403, "FORBIDDEN")
    assert (await fetch(f"/api/chat/conversations/{private['id']}", user=BOB, headers=READ_ALL)).code == 200
    assert_error(await fetch(f"/api/chat/conversations/{private['id']}", method="PUT", json={"title": "x"},
                             user=BOB, headers=READ_ALL), 403, "FORBIDDEN")
    assert_error(await fetch(f"/api/chat/conversations/{private['id']}", user=BOB), 404, "NOT_FOUND")


@pytest.mark.gen_test
async def test_openapi_documents_the_chat_routes(fetch):
    document = (await fetch("/api/openapi.json")).json
    paths = document["paths"]
    for path in ("/api/chat/conversations", "/api/chat/message", "/api/chat/search"):
        assert path in paths, sorted(paths)
    assert any("/api/chat/conversations/" in path and path.endswith("/messages") for path in paths)
