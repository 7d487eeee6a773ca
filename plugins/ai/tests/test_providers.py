"""The providers on their own: ``echo``, and ``openai`` against a real SSE server on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from plugins.ai.providers import (
    ENTRY_POINT_GROUP, ChatMessage, ProviderError, ProviderSettings, ProviderTimeout, StreamCancelled,
    available_providers, load_provider,
)
from plugins.ai.providers.echo import echo_reply

from .fake_openai import Script

ROOT = Path(__file__).resolve().parents[3]  # the checkout: plugins/ai/tests/ is three below

MESSAGES: list[ChatMessage] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello to the world"}]


def openai(fake, **settings):
    values = {"base_url": fake.base_url, "api_key": "sk-test", "model": "fake-model", "timeout": 5,
              "idle_timeout": 5, "max_retries": 2}
    values.update(settings)
    return load_provider("openai", ProviderSettings(**values))


async def collect(stream):
    return [delta async for delta in stream]


def test_both_providers_are_registered_entry_points():
    providers = available_providers()
    assert {"echo", "openai"} <= set(providers), ENTRY_POINT_GROUP
    with pytest.raises(LookupError, match="not an installed AI provider.*echo"):
        load_provider("no-such-provider", ProviderSettings())
    with pytest.raises(LookupError, match="AI_BASE_URL"):
        load_provider("openai", ProviderSettings())


@pytest.mark.gen_test
async def test_echo_streams_the_last_user_message_word_by_word():
    provider = load_provider("echo", ProviderSettings(echo_delay=0))
    stream = provider.stream(MESSAGES + [{"role": "assistant", "content": "earlier"}])
    deltas = await collect(stream)
    assert deltas == ["Echo: ", "Say ", "hello ", "to ", "the ", "world"]
    assert "".join(deltas) == echo_reply(MESSAGES) == "Echo: Say hello to the world"
    assert stream.finish_reason == "stop" and stream.usage is not None
    assert stream.usage.completion_tokens == len(deltas)
    assert (provider.name, provider.model) == ("echo", "echo")


@pytest.mark.gen_test
async def test_echo_cancel_stops_between_tokens():
    stream = load_provider("echo", ProviderSettings(echo_delay=0.5)).stream(MESSAGES)
    first = await stream.__anext__()
    reader = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)  # the reader is waiting for the next token
    await stream.cancel()
    with pytest.raises(StreamCancelled):
        await reader
    assert first == "Echo: "


@pytest.mark.gen_test
async def test_openai_streams_deltas_in_order_with_the_servers_usage(fake_openai):
    fake_openai.script(Script(tokens=["Hel", "lo", " there", "!"]))
    stream = openai(fake_openai).stream(MESSAGES)
    assert await collect(stream) == ["Hel", "lo", " there", "!"]
    assert stream.finish_reason == "stop"
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens, stream.usage.estimated) == (2 + 5, 4, False)  # words, as the fake counts them
    request = fake_openai.requests[0]
    assert request.body["stream"] is True and request.body["stream_options"] == {"include_usage": True}
    assert request.body["messages"] == MESSAGES and request.body["model"] == "fake-model"
    assert request.headers["Authorization"] == "Bearer sk-test"


@pytest.mark.gen_test
async def test_openai_without_usage_estimates_and_says_so(fake_openai):
    fake_openai.script(Script(tokens=["abcd", "efgh", "i"], usage=False, finish_reason="length"))
    stream = openai(fake_openai).stream(MESSAGES)
    assert "".join(await collect(stream)) == "abcdefghi"
    assert stream.finish_reason == "length"
    prompt = -(-len("Be brief.") // 4) + -(-len("Say hello to the world") // 4)
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens, stream.usage.estimated) == (prompt, 3, True)


@pytest.mark.gen_test
async def test_openai_retries_429_and_5xx_before_the_first_token(fake_openai):
    fake_openai.script(Script(status=429, retry_after="0"), Script(status=503), Script(tokens=["ok"]))
    stream = openai(fake_openai, max_retries=2).stream(MESSAGES)
    assert await collect(stream) == ["ok"]
    assert len(fake_openai.requests) == 3 and stream.attempts == 3


@pytest.mark.gen_test
async def test_openai_gives_up_after_the_retries(fake_openai):
    fake_openai.script(*[Script(status=500)] * 5)
    with pytest.raises(ProviderError, match="HTTP 500") as failure:
        await collect(openai(fake_openai, max_retries=1).stream(MESSAGES))
    assert failure.value.status == 500 and not failure.value.started
    assert len(fake_openai.requests) == 2


@pytest.mark.gen_test
async def test_openai_does_not_retry_a_client_error(fake_openai):
    fake_openai.script(Script(status=401))
    with pytest.raises(ProviderError, match="HTTP 401"):
        await collect(openai(fake_openai).stream(MESSAGES))
    assert len(fake_openai.requests) == 1


@pytest.mark.gen_test
async def test_openai_times_out_before_the_first_token_and_hangs_up(fake_openai):
    fake_openai.script(Script(stall_before_first=True))
    with pytest.raises(ProviderTimeout, match="within 0.3s") as failure:
        await collect(openai(fake_openai, timeout=0.3, max_retries=0).stream(MESSAGES))
    assert not failure.value.started
    await fake_openai.wait_for(lambda fake: fake.requests[0].client_left)


@pytest.mark.gen_test
async def test_openai_idle_timeout_after_the_first_token_is_not_retried(fake_openai):
    fake_openai.script(Script(tokens=["one", " two", " three"], stall_after=2))
    stream = openai(fake_openai, idle_timeout=0.3, max_retries=3).stream(MESSAGES)
    received = []
    with pytest.raises(ProviderTimeout, match="stopped sending") as failure:
        async for delta in stream:
            received.append(delta)
    assert received == ["one", " two"] and failure.value.started
    await fake_openai.wait_for(lambda fake: fake.requests[0].client_left)
    assert len(fake_openai.requests) == 1  # nothing is retried once the user saw text


@pytest.mark.gen_test
async def test_openai_slow_tokens_within_the_idle_timeout_are_fine(fake_openai):
    fake_openai.script(Script(tokens=["a", "b", "c"], delay=0.1))
    assert await collect(openai(fake_openai, idle_timeout=2).stream(MESSAGES)) == ["a", "b", "c"]


@pytest.mark.gen_test
async def test_openai_cancel_closes_the_upstream_connection_at_once(fake_openai):
    fake_openai.script(Script(tokens=["a", "b", "c"], stall_after=1))
    stream = openai(fake_openai).stream(MESSAGES)
    assert await stream.__anext__() == "a"
    reader = asyncio.ensure_future(stream.__anext__())
    await fake_openai.wait_for(lambda fake: fake.requests[0].sent == 1)
    await asyncio.sleep(0)
    await stream.cancel()
    with pytest.raises(StreamCancelled):
        await reader
    await fake_openai.wait_for(lambda fake: fake.requests[0].client_left, timeout=2)
    assert not fake_openai.requests[0].finished


@pytest.mark.gen_test
async def test_openai_cancel_while_waiting_for_the_first_token(fake_openai):
    fake_openai.script(Script(stall_before_first=True))
    stream = openai(fake_openai, timeout=30).stream(MESSAGES)
    reader = asyncio.ensure_future(collect(stream))
    await fake_openai.wait_for(lambda fake: fake.requests)
    await stream.cancel()
    with pytest.raises(StreamCancelled):
        await reader
    await fake_openai.wait_for(lambda fake: fake.requests[0].client_left, timeout=2)


@pytest.mark.gen_test
async def test_openai_connection_refused_is_a_provider_error():
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = load_provider("openai", ProviderSettings(base_url=f"http://127.0.0.1:{port}/v1", timeout=5,
                                                        max_retries=1))
    with pytest.raises(ProviderError, match="could not reach"):
        await collect(provider.stream(MESSAGES))


@pytest.mark.gen_test
async def test_openai_retries_a_connection_dropped_before_the_first_token(fake_openai):
    fake_openai.script(Script(drop_after=0), Script(tokens=["second", " try"]))
    stream = openai(fake_openai, max_retries=1).stream(MESSAGES)
    assert await collect(stream) == ["second", " try"] and len(fake_openai.requests) == 2


@pytest.mark.gen_test
async def test_openai_a_connection_dropped_after_the_first_token_fails(fake_openai):
    fake_openai.script(Script(tokens=["a", "b", "c"], drop_after=1))
    received = []
    with pytest.raises(ProviderError, match="connection to the AI provider failed") as failure:
        async for delta in openai(fake_openai, max_retries=3).stream(MESSAGES):
            received.append(delta)
    assert received == ["a"] and failure.value.started and len(fake_openai.requests) == 1


def test_the_openai_provider_loads_anyios_asyncio_backend_when_it_is_imported():
    # httpx's first connection would otherwise import it on the IOLoop (~20 ms, see the
    # provider's module); a fresh interpreter shows whether importing the provider did it.
    code = ("import sys, plugins.ai.providers.openai; "
            "sys.exit(0 if 'anyio._backends._asyncio' in sys.modules else 3)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0
