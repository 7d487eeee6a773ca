"""The OpenAI-compatible API through the real server, with the official ``openai`` package as
the client, the way a consumer would use it: ``AsyncOpenAI(base_url=f"{url}/v1", api_key=…)``."""

from __future__ import annotations

import openai
import pytest

from vachat.testing import eventually

PLUGINS = ["openai_compat", "chat", "ai"]


def setup(config=None, **ai):
    return pytest.mark.vachat(plugins=PLUGINS, config={
        **(config or {}), "plugin_sections": {"ai": {"echo_delay": 0, **ai}}})


@pytest.fixture
def sdk(production_http_server, base_url, io_loop):
    """``sdk(user)``: an ``AsyncOpenAI`` client signed in as ``user`` with an access token
    (``api_key=`` a vachat API key works the same), no retries, so each refusal is seen once."""
    clients = []

    def make(user, **options):
        client = openai.AsyncOpenAI(**{"base_url": f"{base_url}/v1", "api_key": user.access_token,
                                       "max_retries": 0, "timeout": 20, **options})
        clients.append(client)
        return client

    yield make
    for client in clients:
        io_loop.run_sync(client.close)


async def stored_messages(fetch, user, conversation_id):
    """The conversation's messages, oldest first."""
    response = await fetch(f"/api/chat/conversations/{conversation_id}/messages?limit=100", user=user)
    assert response.code == 200, response.body
    return list(reversed(response.json["data"]["items"]))


async def messages_of(fetch, user, conversation_id):
    return [(m["role"], m["content"]) for m in await stored_messages(fetch, user, conversation_id)]


@setup()
@pytest.mark.gen_test
async def test_models_names_the_providers_model(app, make_user, sdk):
    models = await sdk(await make_user()).models.list()
    assert [(m.id, m.object) for m in models.data] == [("echo", "model")]


@setup()
@pytest.mark.gen_test
async def test_a_completion_is_a_new_conversation_with_the_history_and_the_reply(app, fetch, make_user, sdk):
    ada = await make_user()
    raw = await sdk(ada).chat.completions.with_raw_response.create(model="echo", messages=[
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "  Bonjour,\n   how are you? "},
        {"role": "assistant", "content": "Bien."},
        {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "text", "text": "now?"}]},
    ])
    reply = raw.parse()
    assert reply.object == "chat.completion" and reply.model == "echo"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "Echo: And now?"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens > 0 and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    conversation_id = raw.headers["x-vachat-conversation-id"]
    conversation = (await fetch(f"/api/chat/conversations/{conversation_id}", user=ada)).json["data"]
    assert conversation["title"] == "Bonjour, how are you?"
    assert conversation["metadata"]["systemPrompt"] == "Answer in French."
    assert await messages_of(fetch, ada, conversation_id) == [
        ("user", "  Bonjour,\n   how are you? "), ("assistant", "Bien."), ("user", "And now?"),
        ("assistant", "Echo: And now?")]
    assert reply.id == f"chatcmpl-{(await stored_messages(fetch, ada, conversation_id))[-1]['id']}"


@setup()
@pytest.mark.gen_test
async def test_the_header_continues_a_conversation_and_ignores_earlier_messages(app, fetch, make_user, sdk, ws_connect):
    ada, bob = await make_user(), await make_user()
    conversation = (await fetch("/api/chat/conversations", method="POST", json={"title": "Ongoing"}, user=ada)).json["data"]
    socket = await ws_connect(user=ada)
    await socket.receive("ready")
    assert (await socket.request("join-conversation", {"conversationId": conversation["id"]}))["type"] == "ack"

    header = {"X-Vachat-Conversation-Id": conversation["id"]}
    reply = await sdk(ada).chat.completions.create(model="echo", extra_headers=header, messages=[
        {"role": "user", "content": "ignored history"}, {"role": "user", "content": "first"}])
    assert reply.choices[0].message.content == "Echo: first"
    assert await messages_of(fetch, ada, conversation["id"]) == [("user", "first"), ("assistant", "Echo: first")]
    # Sockets in the room saw it as any other reply.
    assert (await socket.receive("ai-delta"))["data"]["conversationId"] == conversation["id"]
    stored = [(await socket.receive("new-message"))["data"] for _ in range(2)]
    assert [(m["role"], m["content"]) for m in stored] == [("user", "first"), ("assistant", "Echo: first")]

    with pytest.raises(openai.NotFoundError):
        await sdk(bob).chat.completions.create(model="echo", extra_headers=header,
                                               messages=[{"role": "user", "content": "hijack"}])


@setup()
@pytest.mark.gen_test
async def test_streaming_answers_chunks_then_done(app, fetch, make_user, sdk):
    ada = await make_user()
    stream = await sdk(ada).chat.completions.create(
        model="echo", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "one two three four"}])
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three four"
    finishing = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishing == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


@setup()
@pytest.mark.gen_test
async def test_max_tokens_cuts_the_reply(app, make_user, sdk):
    reply = await sdk(await make_user()).chat.completions.create(
        model="echo", max_tokens=3, messages=[{"role": "user", "content": "a b c d e f"}])
    assert reply.choices[0].message.content == "Echo: a b "
    assert reply.choices[0].finish_reason == "length"


@setup()
@pytest.mark.gen_test
async def test_errors_have_openais_shape_and_sdks_raise_their_usual_exceptions(app, make_user, sdk):
    ada = await make_user()
    client = sdk(ada)
    with pytest.raises(openai.NotFoundError) as unknown:
        await client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.code == "model_not_found" and unknown.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="echo", messages=[{"role": "assistant", "content": "hi"}])
    assert "messages.0.role" in bad.value.message and bad.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="echo", temperature=7, messages=[{"role": "user", "content": "x"}])
    stranger = sdk(ada, api_key="vak_" + "0" * 43)
    with pytest.raises(openai.AuthenticationError) as unauthorized:
        await stranger.models.list()
    assert unauthorized.value.type == "authentication_error"


@setup(daily_tokens="free=60")
@pytest.mark.gen_test
async def test_a_quota_is_a_429_the_sdk_does_not_retry(app, make_user, sdk):
    client = sdk(await make_user(), max_retries=2)  # were 429 retried, three requests would be made
    await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "spend it all " * 9}])
    with pytest.raises(openai.RateLimitError) as refused:
        await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "more"}])
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert refused.value.code == "QUOTA_EXCEEDED"


@setup(echo_delay=0.2)
@pytest.mark.gen_test
async def test_one_reply_at_a_time_is_a_409_and_a_client_going_away_stops_its_reply(app, fetch, make_user, sdk):
    ada = await make_user()
    client = sdk(ada)
    raw = await client.chat.completions.with_raw_response.create(
        model="echo", stream=True, messages=[{"role": "user", "content": " ".join(["word"] * 50)}])
    conversation_id = raw.headers["x-vachat-conversation-id"]
    stream = raw.parse()
    first = await stream.__anext__()
    assert first.choices[0].delta.role == "assistant"

    header = {"X-Vachat-Conversation-Id": conversation_id}
    with pytest.raises(openai.ConflictError) as busy:
        await client.chat.completions.create(model="echo", extra_headers=header,
                                             messages=[{"role": "user", "content": "me too"}])
    assert busy.value.response.headers["x-should-retry"] == "false"

    await stream.close()  # the client goes away mid-reply

    async def stored_cancelled():
        replies = [m for m in await stored_messages(fetch, ada, conversation_id) if m["role"] == "assistant"]
        return replies and replies[-1]["metadata"].get("finishReason") == "cancelled" and replies[-1]
    reply = await eventually(stored_cancelled, timeout=10, what="the reply to be stored cancelled")
    assert len(reply["content"]) < len("Echo: " + " ".join(["word"] * 50))
    # The conversation takes a new request at once.
    again = await client.chat.completions.create(model="echo", extra_headers=header,
                                                 messages=[{"role": "user", "content": "again"}])
    assert again.choices[0].message.content == "Echo: again"


@setup(config={"cors_origins": ["https://app.example"]})
@pytest.mark.gen_test
async def test_an_api_key_works_and_the_header_is_readable_by_browsers(app, fetch, make_user, sdk):
    ada = await make_user()
    key = (await fetch("/api/auth/api-keys", method="POST", json={"name": "sdk"}, user=ada)).json["data"]["key"]
    client = sdk(ada, api_key=key)
    reply = await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "keyed"}])
    assert reply.choices[0].message.content == "Echo: keyed"
    response = await fetch("/v1/models", headers={"Origin": "https://app.example", "X-API-Key": key})
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "X-Vachat-Conversation-Id" in response.headers["Access-Control-Expose-Headers"]
