"""A message's and a conversation's ``metadata`` is capped at 16 KiB encoded (as profile
preferences are), over REST and the WebSocket alike: 400 ``VALIDATION_FAILED`` naming
``metadata``, and nothing stored."""

import pytest

from vachat.testing import assert_error, error_fields

from .helpers import connect, create_conversation, send

LIMIT = 16 * 1024
# JSON {"note":"…"} is 11 bytes around the text.
FITS = {"note": "x" * (LIMIT - 11)}
TOO_LARGE = {"note": "x" * (LIMIT - 10)}
REFUSAL = {"metadata": f"must take at most {LIMIT} bytes as JSON"}


def refused(response):
    body = assert_error(response, 400, "VALIDATION_FAILED")
    assert error_fields(body) == REFUSAL
    return body


@pytest.mark.gen_test
async def test_conversation_metadata_over_16_kib_is_refused_on_create_and_update(fetch):
    refused(await fetch("/api/chat/conversations", method="POST", json={"title": "big", "metadata": TOO_LARGE},
                        user="alice"))
    listing = await fetch("/api/chat/conversations", user="alice")
    assert listing.data == []
    conversation = await create_conversation(fetch, title="fits", metadata=FITS)
    assert conversation["metadata"] == FITS
    path = f"/api/chat/conversations/{conversation['id']}"
    refused(await fetch(path, method="PUT", json={"metadata": TOO_LARGE}, user="alice"))
    assert (await fetch(path, user="alice")).data["metadata"] == FITS


@pytest.mark.gen_test
async def test_message_metadata_over_16_kib_is_refused_over_rest(fetch):
    conversation = await create_conversation(fetch)
    refused(await fetch("/api/chat/message", method="POST", user="alice", json={
        "conversationId": conversation["id"], "content": "hi", "metadata": TOO_LARGE}))
    message = (await send(fetch, conversation["id"], "hi", metadata=FITS))["data"]
    assert message["metadata"] == FITS
    refused(await fetch(f"/api/chat/messages/{message['id']}", method="PUT", user="alice",
                        json={"content": "edited", "metadata": TOO_LARGE}))
    page = await fetch(f"/api/chat/conversations/{conversation['id']}/messages", user="alice")
    assert [(m["content"], m["metadata"]) for m in page.data["items"]] == [("hi", FITS)]


@pytest.mark.gen_test
async def test_message_metadata_over_16_kib_is_refused_over_the_websocket(fetch, ws_connect):
    conversation = await create_conversation(fetch)
    alice = await connect(ws_connect)
    reply = await alice.request("send-message", {"conversationId": conversation["id"], "content": "hi",
                                                 "metadata": TOO_LARGE})
    assert reply["type"] == "error" and reply["data"]["code"] == "VALIDATION_FAILED", reply
    assert {d["field"]: d["message"] for d in reply["data"]["details"]} == REFUSAL
    accepted = await alice.request("send-message", {"conversationId": conversation["id"], "content": "hi",
                                                    "metadata": FITS})
    assert accepted["type"] == "ack", accepted
    page = await fetch(f"/api/chat/conversations/{conversation['id']}/messages", user="alice")
    assert [m["metadata"] for m in page.data["items"]] == [FITS]
