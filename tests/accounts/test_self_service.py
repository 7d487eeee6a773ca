"""A user leaving or taking their data, through the real server: ``DELETE /api/users/me`` and
``GET /api/users/me/export`` with the chat and files plugins contributing their parts."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from vachat.testing import assert_error, error_fields, login

WITH_CHAT_AND_FILES = pytest.mark.vachat(plugins=["chat", "files"], config={"rate_limit_export": "2/3600s"})


def _multipart(filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "selfservice0boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: text/plain\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def _upload(fetch, user, filename: str, data: bytes):
    body, content_type = _multipart(filename, data)
    response = await fetch("/api/files/upload", method="POST", body=body, headers={"Content-Type": content_type},
                           user=user)
    assert response.code == 201, response.body
    return response.json["data"]


async def _conversation_with_messages(fetch, user, title: str, texts: list[str]):
    conversation = (await fetch("/api/chat/conversations", method="POST", json={"title": title}, user=user)).json["data"]
    for text in texts:
        response = await fetch("/api/chat/message", method="POST", user=user,
                               json={"conversationId": conversation["id"], "content": text})
        assert response.code in (200, 201), response.body
    return conversation


async def _delete_me(fetch, user, password, **kwargs):
    return await fetch("/api/users/me", method="DELETE", json={"password": password}, user=user, **kwargs)


# ---------------------------------------------------------------------------
# deleting my account
# ---------------------------------------------------------------------------


@WITH_CHAT_AND_FILES
@pytest.mark.gen_test
async def test_deleting_my_account_removes_everything_it_owns(app, fetch, ws_connect, make_user):
    ada, bob = await make_user(), await make_user()
    mine = await _conversation_with_messages(fetch, ada, "Ada's", ["hello", "again"])
    theirs = await _conversation_with_messages(fetch, bob, "Bob's", ["hi"])
    file = await _upload(fetch, ada, "notes.txt", b"private notes")
    key = await fetch("/api/auth/api-keys", method="POST", json={"name": "script"}, user=ada)
    socket = await ws_connect(user=ada)
    await socket.receive("ready")

    response = await _delete_me(fetch, ada, ada.password)
    assert response.code == 200, response.body
    assert response.json["data"] is None

    assert (await socket.closed())[0] == 4401
    assert_error(await fetch("/api/auth/me", user=ada), 401, "UNAUTHORIZED")
    assert_error(await fetch("/api/auth/me", headers={"X-API-Key": key.json["data"]["key"]}), 401, "UNAUTHORIZED")
    assert_error(await login(fetch, ada.email, ada.password), 401, "UNAUTHORIZED")
    chat, files = app.service("chat"), app.service("files")
    assert await chat.get_conversation(mine["id"]) is None
    assert await chat.get_conversation(theirs["id"]) is not None
    assert await files.describe([file["id"]]) == {}
    # The audit log keeps the fact, not the data.
    rows = await app.accounts.query_audit(user_id=ada.id, action="user.deleted")
    assert rows[1] == 1 and "hello" not in json.dumps(rows[0], default=str)


@WITH_CHAT_AND_FILES
@pytest.mark.gen_test
async def test_deleting_my_account_needs_my_password_and_a_session(app, fetch, make_user):
    ada = await make_user()
    response = await _delete_me(fetch, ada, "not-my-password")
    assert error_fields(assert_error(response, 400, "VALIDATION_FAILED")) == {"password": "is incorrect"}
    assert error_fields(assert_error(await fetch("/api/users/me", method="DELETE", json={}, user=ada),
                                     400, "VALIDATION_FAILED")).keys() == {"password"}

    key = (await fetch("/api/auth/api-keys", method="POST", json={"name": "bot"}, user=ada)).json["data"]["key"]
    response = await fetch("/api/users/me", method="DELETE", json={"password": ada.password}, headers={"X-API-Key": key})
    assert_error(response, 403, "FORBIDDEN")
    assert (await fetch("/api/auth/me", user=ada)).code == 200  # still here


@WITH_CHAT_AND_FILES
@pytest.mark.gen_test
async def test_the_last_administrator_cannot_delete_themself(app, fetch, admin_user, make_user):
    assert_error(await _delete_me(fetch, admin_user, admin_user.password), 409, "CONFLICT")
    assert (await fetch("/api/auth/me", user=admin_user)).code == 200
    await make_user(role="admin")  # another administrator: now it may go
    assert (await _delete_me(fetch, admin_user, admin_user.password)).code == 200


# ---------------------------------------------------------------------------
# exporting my data
# ---------------------------------------------------------------------------


def _archive(response) -> zipfile.ZipFile:
    assert response.code == 200, response.body
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="vachat-export-')
    # Streamed as it is made: no length was known when the answer began.
    assert "Content-Length" not in response.headers and response.headers["Transfer-Encoding"] == "chunked"
    archive = zipfile.ZipFile(io.BytesIO(response.body))
    assert archive.testzip() is None  # every entry's CRC checks out
    return archive


@WITH_CHAT_AND_FILES
@pytest.mark.gen_test
async def test_the_export_holds_my_profile_conversations_and_files(app, fetch, make_user):
    ada, bob = await make_user(first_name="Ada"), await make_user()
    first = await _conversation_with_messages(fetch, ada, "First", ["one", "two"])
    await _conversation_with_messages(fetch, ada, "Second", ["three"])
    await _conversation_with_messages(fetch, bob, "Bob's secret", ["not yours"])
    contents = "".join(f"line {n}: ünïcødé\n" for n in range(20000)).encode()  # several chunks
    notes = await _upload(fetch, ada, "../../etc/notes.txt", contents)
    await _upload(fetch, bob, "bob.txt", b"bob's file")

    archive = _archive(await fetch("/api/users/me/export", user=ada))
    names = archive.namelist()
    profile = json.loads(archive.read("profile.json"))
    assert (profile["id"], profile["firstName"]) == (ada.id, "Ada")
    assert "passwordHash" not in profile and "password_hash" not in json.dumps(profile)

    conversations = json.loads(archive.read("conversations.json"))
    assert [c["title"] for c in conversations] == ["First", "Second"]
    assert [m["content"] for m in conversations[0]["messages"]] == ["one", "two"]
    assert conversations[0]["id"] == first["id"]
    assert "not yours" not in archive.read("conversations.json").decode()

    [stored_name] = [name for name in names if name.startswith(f"files/{notes['id']}/")]
    assert ".." not in stored_name.split("/")
    assert archive.read(stored_name) == contents
    assert not any("bob" in name for name in names)
    assert [f["id"] for f in json.loads(archive.read("files.json"))] == [notes["id"]]


@WITH_CHAT_AND_FILES
@pytest.mark.gen_test
async def test_exports_are_limited_per_user(app, fetch, make_user):
    ada, bob = await make_user(), await make_user()
    for _ in range(2):
        _archive(await fetch("/api/users/me/export", user=ada))
    response = await fetch("/api/users/me/export", user=ada)
    assert_error(response, 429, "RATE_LIMITED")
    assert int(response.headers["Retry-After"]) > 0
    _archive(await fetch("/api/users/me/export", user=bob))  # per user, not per server
    assert_error(await fetch("/api/users/me/export"), 401, "UNAUTHORIZED")
