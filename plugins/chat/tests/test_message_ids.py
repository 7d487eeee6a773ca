"""A message id in someone else's conversation is answered exactly like one that does not
exist (404 "Message not found") on every operation that takes a message id, so the answers
never tell whether the id is a message somewhere."""

from __future__ import annotations

import pytest

from vachat.testing import assert_error

from .helpers import ALICE, BOB, MISSING_ID, create_conversation, send


@pytest.mark.gen_test
async def test_anothers_private_message_is_not_found_like_a_missing_one(fetch):
    conversation = await create_conversation(fetch, user=ALICE)
    hidden = (await send(fetch, conversation["id"], "secret", user=ALICE))["data"]
    for method, suffix, body in (("PUT", "", {"content": "mine now"}), ("DELETE", "", None)):
        answers = [assert_error(await fetch(f"/api/chat/messages/{message_id}{suffix}", method=method, json=body,
                                            user=BOB), 404, "NOT_FOUND")
                   for message_id in (hidden["id"], MISSING_ID)]
        assert answers[0] == answers[1] and answers[0]["error"] == "Message not found", (method, answers)
    page = await fetch(f"/api/chat/conversations/{conversation['id']}/messages", user=ALICE)
    assert [(m["id"], m["content"], m["isEdited"]) for m in page.data["items"]] == [(hidden["id"], "secret", False)]
