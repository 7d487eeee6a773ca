"""``metadata.generation`` on a message that asks for a reply: honoured by the provider, and
checked before anything is stored."""

from __future__ import annotations

import pytest

from vachat.testing import assert_error, error_fields

QUICK = pytest.mark.vachat(plugins=["ai", "chat"], config={"plugin_sections": {"ai": {"echo_delay": 0}}})


async def ask(fetch, user, conversation_id, generation):
    return await fetch("/api/chat/message", method="POST", user=user, json={
        "conversationId": conversation_id, "content": "one two three four", "requiresAIResponse": True,
        "metadata": {"generation": generation}})


@QUICK
@pytest.mark.gen_test
async def test_max_tokens_reaches_the_provider(fetch, ws_connect, make_user):
    ada = await make_user()
    conversation = (await fetch("/api/chat/conversations", method="POST", json={}, user=ada)).json["data"]
    socket = await ws_connect(user=ada)
    await socket.receive("ready")
    await socket.request("join-conversation", {"conversationId": conversation["id"]})
    assert (await ask(fetch, ada, conversation["id"], {"maxTokens": 2, "temperature": 0.5})).code in (200, 201)
    done = await socket.receive("ai-done")
    assert done["data"]["finishReason"] == "length"
    reply = [(await socket.receive("new-message"))["data"] for _ in range(2)][-1]
    assert reply["content"] == "Echo: one "


@QUICK
@pytest.mark.gen_test
async def test_malformed_options_are_400_and_nothing_is_stored(fetch, make_user):
    ada = await make_user()
    conversation = (await fetch("/api/chat/conversations", method="POST", json={}, user=ada)).json["data"]
    cases = {
        "metadata.generation.maxTokens": {"maxTokens": 0},
        "metadata.generation.temperature": {"temperature": 2.5},
        "metadata.generation.topK": {"topK": 3},
        "metadata.generation": "hot",
    }
    for field, generation in cases.items():
        response = await ask(fetch, ada, conversation["id"], generation)
        assert error_fields(assert_error(response, 400, "VALIDATION_FAILED")).keys() == {field}, generation
    page = await fetch(f"/api/chat/conversations/{conversation['id']}/messages", user=ada)
    assert page.json["data"]["items"] == []
