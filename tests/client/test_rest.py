"""``vachat.client.Client`` against the real server: signing in (password, registration, API
key), conversations, messages, sends, search, typed errors, and access tokens that expire
during a session (refreshed before they expire, and once when the server says they have)."""

from __future__ import annotations

import asyncio
import time

import pytest

from vachat.client import (
    Backoff, Client, Conflict, ConnectionFailed, NotFound, Tokens, Unauthorized, UnsupportedMediaType,
    ValidationFailed,
    token_expiry,
)
from vachat.testing import eventually

from .helpers import WAIT, Recorder, TcpProxy

CHAT = pytest.mark.vachat(plugins=["chat"])
PASSWORD = "Correct-Horse-9!"


def server(http_port: int) -> str:
    return f"http://127.0.0.1:{http_port}"


@pytest.mark.gen_test
@CHAT
async def test_register_sign_in_and_an_api_key(production_http_server, http_port, fetch):
    async with Client(server(http_port)) as newcomer:
        user = await newcomer.register("newcomer@example.test", PASSWORD, displayName="New")
        assert user.email == "newcomer@example.test" and user.display_name == "New"
        assert (await newcomer.me()).id == user.id
        key = (await fetch("/api/auth/api-keys", method="POST", json={"name": "bot"},
                           headers={"Authorization": f"Bearer {newcomer.tokens.access}"})).data["key"]
        await newcomer.sign_out()
    async with Client(server(http_port)) as returning:
        assert (await returning.sign_in("newcomer@example.test", PASSWORD)).id == user.id
        with pytest.raises(Unauthorized) as refused:
            await Client(server(http_port)).sign_in("newcomer@example.test", "Wrong-Password-1!")
        assert refused.value.status == 401 and refused.value.code == "UNAUTHORIZED"
    async with Client(server(http_port), api_key=key) as bot:
        assert (await bot.me()).id == user.id
        conversation = await bot.create_conversation("by key")
        assert (await bot.get_conversation(conversation.id)).title == "by key"


@pytest.mark.gen_test
@CHAT
async def test_conversations_messages_search_and_typed_errors(production_http_server, http_port, make_user):
    user = await make_user()
    async with Client(server(http_port)) as client:
        await client.sign_in(user.email, user.password)
        first = await client.create_conversation("Café plans", tags=["trip"], metadata={"k": 1})
        second = await client.create_conversation("Other")
        assert first.tags == ["trip"] and first.metadata == {"k": 1}
        listed = await client.list_conversations(sort_by="title", sort_order="asc")
        assert [c.title for c in listed.items] == ["Café plans", "Other"] and listed.total == 2
        renamed = await client.update_conversation(first.id, title="Cafe plans", isArchived=False)
        assert renamed.title == "Cafe plans"

        sent = [await client.send_message(first.id, f"message {n} about the cafe") for n in range(5)]
        retried = await client.send_message(first.id, "message 4 about the cafe",
                                             client_message_id=sent[4].client_message_id)
        assert retried.id == sent[4].id  # stored once
        page = await client.messages(first.id, limit=3)
        assert [m.id for m in page.items] == [m.id for m in reversed(sent[2:])]
        older = await client.messages(first.id, before=page.next_cursor, limit=3)
        assert [m.id for m in older.items] == [sent[1].id, sent[0].id] and older.next_cursor is None
        newer = await client.messages(first.id, after=sent[1].id, limit=2)
        assert [m.id for m in newer.items] == [sent[3].id, sent[2].id]
        found = await client.search("café")
        assert {m.id for m in found.items} == {m.id for m in sent}
        edited = await client.edit_message(sent[0].id, "edited")
        assert edited.is_edited and edited.content == "edited"
        await client.delete_message(sent[1].id)

        with pytest.raises(NotFound) as missing:
            await client.get_conversation("nope")
        assert missing.value.status == 404 and missing.value.code == "NOT_FOUND"
        with pytest.raises(ValidationFailed) as invalid:
            await client.create_conversation("x" * 1000)
        assert invalid.value.status == 400 and invalid.value.details[0]["field"] == "title"
        with pytest.raises(Conflict) as conflict:
            await client.send_message(first.id, "other text", client_message_id=sent[4].client_message_id)
        assert conflict.value.code == "CONFLICT"
        with pytest.raises(Conflict, match="no AI plugin"):
            await client.send_message(second.id, "hello?", requires_ai_response=True)
        await client.delete_conversation(second.id)
        assert [c.id for c in (await client.list_conversations()).items] == [first.id]


@pytest.mark.gen_test
async def test_an_unreachable_server_is_a_connection_failure():
    async with TcpProxy(9) as proxy:
        proxy.cut()
        async with Client(proxy.url) as client:
            with pytest.raises(ConnectionFailed, match="Cannot reach"):
                await client.sign_in("a@example.test", "whatever")


@pytest.mark.gen_test(timeout=60)
@pytest.mark.vachat(plugins=["chat"], config={"access_token_ttl": 2, "refresh_token_ttl": 3600})
async def test_tokens_expiring_during_a_session_are_refreshed_unnoticed(production_http_server, http_port, fetch,
                                                                      make_user):
    user = await make_user()
    async with TcpProxy(http_port) as proxy:
        # One client refreshes ahead of expiry; the other's clock is an hour slow, so only the
        # server's TOKEN_EXPIRED (REST) and 4401 (a socket's upgrade) can tell it.
        ahead = Client(proxy.url)
        await ahead.sign_in(user.email, user.password)
        behind = Client(proxy.url, clock=lambda: time.time() - 3600)
        await behind.sign_in(user.email, user.password)
        conversation = await ahead.create_conversation("expiring")
        lives = []
        for client in (ahead, behind):
            live = client.live(backoff=Backoff(0.05, 0.5))
            await live.connect()
            await live.join(conversation.id)
            lives.append((live, Recorder(live)))
        first_tokens = {id(c): c.tokens.access for c in (ahead, behind)}
        issued, expires = token_expiry(ahead.tokens.access)
        assert expires - issued == 2

        async def refused(token):
            response = await fetch("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
            return response.code == 401 and response.json["code"] == "TOKEN_EXPIRED"

        async def both_refused():
            return await refused(first_tokens[id(ahead)]) and await refused(first_tokens[id(behind)])

        # The server grants a few seconds of clock skew after the 2 s lifetime.
        await eventually(both_refused, 30, "the access tokens to expire", interval=0.25)

        # REST goes on; concurrent calls share one refresh (a second would end the session).
        for client in (ahead, behind):
            results = await asyncio.gather(*(client.get_conversation(conversation.id) for _ in range(5)))
            assert all(r.id == conversation.id for r in results)
            assert client.refresh_count == 1 and client.tokens.access != first_tokens[id(client)]
        # So do the sockets, through a reconnect that needs a valid token.
        proxy.cut()
        proxy.restore()
        for index, (live, record) in enumerate(lives):
            sent = await asyncio.wait_for(live.send(conversation.id, f"after expiry {index}"), WAIT)
            await record.wait_for(lambda events, sent=sent: sent.id in record.message_ids())
            assert record.error is None and live.reconnects == 1
        assert behind.refresh_count >= 1
        for live, record in lives:
            await live.close()
        await ahead.close()
        await behind.close()


@pytest.mark.gen_test
@CHAT
async def test_saved_tokens_resume_the_session(production_http_server, http_port, make_user):
    user = await make_user()
    async with Client(server(http_port)) as first:
        await first.sign_in(user.email, user.password)
        saved = Tokens(first.tokens.access, first.tokens.refresh)
    async with Client(server(http_port), tokens=saved) as resumed:
        assert (await resumed.me()).id == user.id
        await resumed.refresh()  # the session goes on: its refresh token rotates
        assert resumed.tokens.refresh != saved.refresh and (await resumed.me()).id == user.id


@pytest.mark.gen_test
@CHAT
async def test_a_session_that_ended_stops_the_live_connection_with_unauthorized(production_http_server, http_port,
                                                                               fetch, make_user):
    user = await make_user()
    async with Client(server(http_port)) as client:
        await client.sign_in(user.email, user.password)
        live = client.live(backoff=Backoff(0.05, 0.5))
        await live.connect()
        record = Recorder(live)
        stale = Tokens(client.tokens.access, client.tokens.refresh)
        await fetch("/api/auth/logout", method="POST", headers={"Authorization": f"Bearer {stale.access}"})
        await record.wait_for(lambda events: record.error is not None)
        assert isinstance(record.error, Unauthorized)
        with pytest.raises(Unauthorized):
            await live.send("anything", "hello")
        await live.close()


def test_the_client_imports_nothing_of_the_server():
    """vachat.client speaks the public protocol only: the standard library, Tornado's clients,
    prompt_toolkit for the terminal, and its own modules."""
    import ast
    import sys
    from pathlib import Path

    import vachat.client

    allowed_third_party = ("tornado.httpclient", "tornado.websocket", "prompt_toolkit")
    package = Path(vachat.client.__file__).parent
    refused = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                if node.level > 1:
                    refused.append(f"{path.name}: from {'.' * node.level}{node.module or ''}")
                continue
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or name.startswith(allowed_third_party):
                    continue
                refused.append(f"{path.name}: {name}")
    assert refused == []


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=["chat", "files"])
async def test_files_upload_list_download_and_attach(production_http_server, http_port, make_user, tmp_path):
    user = await make_user()
    source = tmp_path / "notes.txt"
    source.write_text("plain words, ünïcode too\n" * 100, encoding="utf-8")
    async with Client(server(http_port)) as client:
        await client.sign_in(user.email, user.password)
        uploaded = await client.upload_file(source, description="my notes")
        assert (uploaded.original_name, uploaded.mime_type, uploaded.size) == ("notes.txt", "text/plain",
                                                                               source.stat().st_size)
        from_bytes = await client.upload_file(content=b"second file\n", filename='odd "name".txt')
        assert from_bytes.original_name == 'odd _name_.txt'  # quoted in the part's header, made safe by the server
        listed = await client.list_files()
        assert {f.id for f in listed.items} == {uploaded.id, from_bytes.id} and listed.total == 2
        assert (await client.get_file(uploaded.id)).raw["description"] == "my notes"
        copy = await client.download_file(uploaded.id, tmp_path / "copy.txt")
        assert copy.read_bytes() == source.read_bytes()
        conversation = await client.create_conversation("with a file")
        message = await client.send_message(conversation.id, "see attached", files=[uploaded.id])
        assert [f["id"] for f in message.files] == [uploaded.id]
        await client.delete_file(from_bytes.id)
        with pytest.raises(NotFound):
            await client.download_file(from_bytes.id, tmp_path / "gone.txt")
        assert not (tmp_path / "gone.txt").exists()
        with pytest.raises(UnsupportedMediaType):
            await client.upload_file(content=b"MZ\x90\x00" + bytes(200), filename="tool.exe")
