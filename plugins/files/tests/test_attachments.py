"""Files on chat messages (the files and chat plugins together, through chat's hooks and
service): ownership checked before a message is stored, metadata on every message that leaves
over REST and WebSocket, downloads for the conversation's readers, and release with the
message or conversation."""

import pytest

from vachat.testing import assert_error, error_fields

from .helpers import pdf_bytes, png_bytes, upload

pytestmark = pytest.mark.vachat(plugins=["files", "chat"])


async def conversation(fetch, user="alice", **fields):
    response = await fetch("/api/chat/conversations", method="POST", json={"title": "t", **fields}, user=user)
    assert response.code == 201, response.body
    return response.data


async def send(fetch, conversation_id, files, user="alice", content="see attached"):
    return await fetch("/api/chat/message", method="POST", user=user,
                       json={"conversationId": conversation_id, "content": content, "files": files})


async def ready_socket(ws_connect, user):
    socket = await ws_connect(user=user)
    await socket.receive("ready")
    return socket


@pytest.mark.gen_test
async def test_a_message_over_rest_carries_its_files_metadata(app, fetch):
    chat = await conversation(fetch)
    image = (await upload(fetch, "alice", "chart.png", png_bytes(), purpose="attachment")).data
    paper = (await upload(fetch, "alice", "paper.pdf", pdf_bytes())).data
    response = await send(fetch, chat["id"], [image["id"], paper["id"]])
    assert response.code == 201, response.body
    files = response.data["files"]
    assert [f["id"] for f in files] == [image["id"], paper["id"]]
    assert files[0]["mimeType"] == "image/png" and files[0]["originalName"] == "chart.png"
    assert files[1]["url"] == f"/api/files/{paper['id']}/download" and files[1]["size"] == len(pdf_bytes())
    # The history shows the same.
    page = await fetch(f"/api/chat/conversations/{chat['id']}/messages", user="alice")
    [stored] = [m for m in page.data["items"] if m["id"] == response.data["id"]]
    assert [f["mimeType"] for f in stored["files"]] == ["image/png", "application/pdf"]


@pytest.mark.gen_test
async def test_someone_elses_or_unknown_files_refuse_the_message(app, fetch):
    chat = await conversation(fetch)
    bobs = (await upload(fetch, "bob", "bob.pdf", pdf_bytes(), isPublic="true")).data  # public, still Bob's
    mine = (await upload(fetch, "alice", "mine.pdf", pdf_bytes())).data
    response = await send(fetch, chat["id"], [mine["id"], bobs["id"], "01ARZ3NDEKTSV4RRFFQ69G5FAV"])
    body = assert_error(response, 404, "NOT_FOUND")
    assert error_fields(body) == {"files.1": "is not one of your files", "files.2": "is not one of your files"}
    page = await fetch(f"/api/chat/conversations/{chat['id']}/messages", user="alice")
    assert page.data["items"] == []  # nothing was stored


@pytest.mark.gen_test
async def test_over_websocket_the_ack_and_the_broadcast_carry_the_metadata(app, fetch, ws_connect):
    chat = await conversation(fetch)
    image = (await upload(fetch, "alice", "chart.png", png_bytes(), purpose="attachment")).data
    sender, watcher = await ready_socket(ws_connect, "alice"), await ready_socket(ws_connect, "alice")
    assert (await watcher.request("join-conversation", {"conversationId": chat["id"]}))["type"] == "ack"
    reply = await sender.request("send-message", {"conversationId": chat["id"], "content": "look", "files": [image["id"]]})
    assert reply["type"] == "ack", reply
    assert reply["data"]["files"][0]["originalName"] == "chart.png"
    broadcast = await watcher.receive("new-message")
    assert broadcast["data"]["files"][0]["mimeType"] == "image/png"
    assert broadcast["data"]["files"][0]["sha256"] == image["sha256"]

    refused = await sender.request("send-message", {"conversationId": chat["id"], "content": "x",
                                                   "files": ["01ARZ3NDEKTSV4RRFFQ69G5FAV"]})
    assert refused["type"] == "error" and refused["data"]["code"] == "NOT_FOUND", refused


@pytest.mark.gen_test
async def test_readers_of_the_conversation_may_download_its_attachments(app, fetch):
    public_chat = await conversation(fetch, isPublic=True)
    private_chat = await conversation(fetch)
    shared = (await upload(fetch, "alice", "shared.pdf", pdf_bytes("shared"))).data
    private = (await upload(fetch, "alice", "private.pdf", pdf_bytes("private"))).data
    assert (await send(fetch, public_chat["id"], [shared["id"]])).code == 201
    assert (await send(fetch, private_chat["id"], [private["id"]])).code == 201

    # Any signed-in user reads a public conversation, so its attachments too.
    assert (await fetch(f"/api/files/{shared['id']}", user="bob")).code == 200
    assert (await fetch(f"/api/files/{shared['id']}/download", user="bob")).body == pdf_bytes("shared")
    assert_error(await fetch(f"/api/files/{shared['id']}", method="DELETE", user="bob"), 403, "FORBIDDEN")
    # Not a private conversation's, unless one may read every conversation.
    assert_error(await fetch(f"/api/files/{private['id']}/download", user="bob"), 404, "NOT_FOUND")
    read_all = {"X-Test-Permissions": "conversations.read_all"}
    assert (await fetch(f"/api/files/{private['id']}/download", user="auditor", headers=read_all)).code == 200


@pytest.mark.gen_test
async def test_deleting_a_message_or_conversation_releases_its_attachments(app, fetch, store):
    chat = await conversation(fetch)
    for_message = (await upload(fetch, "alice", "one.png", png_bytes(), purpose="attachment")).data
    library = (await upload(fetch, "alice", "keep.pdf", pdf_bytes())).data  # a library file, not an attachment
    message = (await send(fetch, chat["id"], [for_message["id"], library["id"]])).json["data"]
    assert len(store.keys()) == 2

    assert (await fetch(f"/api/chat/messages/{message['id']}", method="DELETE", user="alice")).code == 200
    assert_error(await fetch(f"/api/files/{for_message['id']}", user="alice"), 404, "NOT_FOUND")
    assert (await fetch(f"/api/files/{library['id']}", user="alice")).code == 200
    assert len(store.keys()) == 1

    # An attachment held by two messages goes with the conversation that held the last one.
    other = await conversation(fetch)
    twice = (await upload(fetch, "alice", "two.png", png_bytes((5, 5)), purpose="attachment")).data
    await send(fetch, chat["id"], [twice["id"]])
    await send(fetch, other["id"], [twice["id"]])
    assert (await fetch(f"/api/chat/conversations/{chat['id']}", method="DELETE", user="alice")).code == 200
    assert (await fetch(f"/api/files/{twice['id']}", user="alice")).code == 200
    assert (await fetch(f"/api/chat/conversations/{other['id']}", method="DELETE", user="alice")).code == 200
    assert_error(await fetch(f"/api/files/{twice['id']}", user="alice"), 404, "NOT_FOUND")
    assert len(store.keys()) == 1  # the library file alone


@pytest.mark.gen_test
async def test_a_deleted_file_leaves_its_id_on_the_message(app, fetch):
    chat = await conversation(fetch)
    file = (await upload(fetch, "alice", "gone.pdf", pdf_bytes())).data
    message = (await send(fetch, chat["id"], [file["id"]])).json["data"]
    assert (await fetch(f"/api/files/{file['id']}", method="DELETE", user="alice")).code == 200
    page = await fetch(f"/api/chat/conversations/{chat['id']}/messages", user="alice")
    [stored] = [m for m in page.data["items"] if m["id"] == message["id"]]
    assert stored["files"] == [{"id": file["id"]}]
