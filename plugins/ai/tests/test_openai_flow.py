"""The assistant through the real server with the ``openai`` provider talking to a real
OpenAI-compatible SSE server on loopback: streamed replies with the server's usage, coalesced
frames, upstream failures and timeouts before and after the first token, stop closing the
upstream connection, the ``ai_before_request`` hook, and an event loop never blocked."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest

from . import redacting_plugin
from .fake_openai import Script
from .helpers import ALICE, ask, check_reply, connect, create_conversation, join, reply_frames

# The bar for "never blocked": asyncio's slow-callback threshold in debug mode.
SLOW_CALLBACK_SECONDS = 0.05


@pytest.fixture
def vachat_config(request, fake_openai):
    """The openai provider pointed at the fake server; ``@pytest.mark.ai(**settings)`` adds to it."""
    marker = request.node.get_closest_marker("ai")
    section = {"provider": "openai", "base_url": fake_openai.base_url, "api_key": "sk-test", "model": "fake-model",
               "timeout": 5, "idle_timeout": 5, "max_retries": 0, **(marker.kwargs if marker else {})}
    return {"plugin_sections": {"ai": section}}


async def joined_conversation(fetch, ws_connect, **fields):
    cid = (await create_conversation(fetch, **fields))["id"]
    alice = await connect(ws_connect)
    await join(alice, cid)
    return cid, alice


@pytest.mark.gen_test
async def test_a_reply_streams_from_the_server_with_its_usage(fetch, ws_connect, fake_openai):
    fake_openai.script(Script(tokens=["The", " answer", " is", " 42."]))
    cid, alice = await joined_conversation(fetch, ws_connect, metadata={"systemPrompt": "Be exact."})
    asked = (await ask(fetch, cid, "What is the answer?")).data
    stored = check_reply(await reply_frames(alice), cid)
    assert stored["content"] == "The answer is 42." and stored["parentId"] == asked["id"]
    metadata = stored["metadata"]
    assert (metadata["provider"], metadata["model"], metadata["finishReason"]) == ("openai", "fake-model", "stop")
    # The server's own usage (the fake counts words): 2 + 4 prompt, 4 completion.
    assert (metadata["promptTokens"], metadata["completionTokens"], metadata["usageEstimated"]) == (6, 4, False)
    assert fake_openai.requests[0].body["messages"] == [
        {"role": "system", "content": "Be exact."}, {"role": "user", "content": "What is the answer?"}]


@pytest.mark.gen_test
async def test_fast_tokens_are_coalesced_without_changing_the_text(fetch, ws_connect, fake_openai):
    tokens = [f"t{n} " for n in range(400)]
    fake_openai.script(Script(tokens=tokens))
    cid, alice = await joined_conversation(fetch, ws_connect)
    await ask(fetch, cid)
    frames = await reply_frames(alice)
    stored = check_reply(frames, cid)
    assert stored["content"] == "".join(tokens)
    assert 1 <= sum(f["type"] == "ai-delta" for f in frames) < len(tokens)


@pytest.mark.gen_test
async def test_an_upstream_500_stores_an_error_reply_and_tells_the_room(fetch, ws_connect, fake_openai):
    fake_openai.script(Script(status=500))
    cid, alice = await joined_conversation(fetch, ws_connect)
    await ask(fetch, cid)
    stored = check_reply(await reply_frames(alice), cid)
    assert stored["type"] == "error" and "HTTP 500" in stored["content"]
    assert stored["metadata"]["finishReason"] == "error"
    # Nothing came back: nothing is charged.
    assert stored["metadata"]["promptTokens"] == 0
    assert (await fetch("/api/ai/usage", user=ALICE)).data["used"] == 0
    assert 'vachat_ai_errors_total{kind="error",model="fake-model",provider="openai"} 1.0' in \
        (await fetch("/metrics")).body.decode()


@pytest.mark.gen_test
@pytest.mark.ai(max_retries=2)
async def test_an_upstream_503_is_retried_before_the_first_token(fetch, ws_connect, fake_openai):
    fake_openai.script(Script(status=503, retry_after="0"), Script(tokens=["fine"]))
    cid, alice = await joined_conversation(fetch, ws_connect)
    await ask(fetch, cid)
    stored = check_reply(await reply_frames(alice), cid)
    assert stored["content"] == "fine" and len(fake_openai.requests) == 2


@pytest.mark.gen_test
@pytest.mark.ai(timeout=0.3)
async def test_a_timeout_before_the_first_token(fetch, ws_connect, fake_openai):
    fake_openai.script(Script(stall_before_first=True))
    cid, alice = await joined_conversation(fetch, ws_connect)
    await ask(fetch, cid)
    stored = check_reply(await reply_frames(alice), cid)
    assert stored["type"] == "error" and "within 0.3s" in stored["content"]
    await fake_openai.wait_for(lambda fake: fake.requests[0].client_left)


@pytest.mark.gen_test
@pytest.mark.ai(idle_timeout=0.3)
async def test_a_timeout_after_the_first_token_keeps_the_partial_text(fetch, ws_connect, fake_openai):
    fake_openai.script(Script(tokens=["half", " an", " answer"], stall_after=2))
    cid, alice = await joined_conversation(fetch, ws_connect)
    await ask(fetch, cid)
    frames = await reply_frames(alice)
    stored = check_reply(frames, cid)
    assert stored["type"] == "error" and "stopped sending" in stored["content"]
    assert stored["metadata"]["partialContent"] == "half an" == "".join(
        f["data"]["delta"] for f in frames if f["type"] == "ai-delta")
    await fake_openai.wait_for(lambda fake: fake.requests[0].client_left)
    assert len(fake_openai.requests) == 1


@pytest.mark.gen_test
@pytest.mark.ai(max_retries=2)
async def test_a_connection_dropped_after_the_first_token_is_an_error_not_retried(fetch, ws_connect, fake_openai):
    fake_openai.script(Script(tokens=["cut", " short", " here"], drop_after=2))
    cid, alice = await joined_conversation(fetch, ws_connect)
    await ask(fetch, cid)
    stored = check_reply(await reply_frames(alice), cid)
    assert stored["type"] == "error" and "connection to the AI provider failed" in stored["content"]
    assert stored["metadata"]["partialContent"] == "cut short" and len(fake_openai.requests) == 1


@pytest.mark.gen_test
async def test_stop_closes_the_upstream_connection_and_stores_the_partial_reply(fetch, ws_connect, fake_openai):
    fake_openai.script(Script(tokens=["partial", " reply", " never", " ends"], stall_after=2))
    cid, alice = await joined_conversation(fetch, ws_connect)
    await ask(fetch, cid)
    await fake_openai.wait_for(lambda fake: fake.requests and fake.requests[0].sent == 2)
    frames = [await alice.receive("ai-typing")]
    while "".join(f["data"]["delta"] for f in frames if f["type"] == "ai-delta") != "partial reply":
        frames.append(await alice.receive("ai-delta"))
    assert (await alice.request("stop-generation", {"conversationId": cid}))["data"]["stopped"] is True
    await fake_openai.wait_for(lambda fake: fake.requests[0].client_left)
    stored = check_reply(frames + await reply_frames(alice), cid)
    assert stored["content"] == "partial reply" and stored["metadata"]["finishReason"] == "cancelled"


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=["ai", ("redactor", redacting_plugin)])
async def test_ai_before_request_edits_what_the_provider_sees(fetch, ws_connect, fake_openai):
    cid, alice = await joined_conversation(fetch, ws_connect)
    await fetch("/api/chat/message", method="POST", json={"conversationId": cid, "content": "my secret"}, user=ALICE)
    await ask(fetch, cid, "what did I say?")
    check_reply(await reply_frames(alice), cid)
    assert fake_openai.requests[0].body["messages"] == [
        {"role": "system", "content": "You are a helpful assistant. (redacted)"},
        {"role": "user", "content": "what did I say?"}]


class SlowCallbacks(logging.Handler):
    """asyncio's debug-mode slow-callback warnings, collected."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def runqueue_wait() -> float:
    """Seconds this thread has spent runnable but not running (waiting for a CPU), from the
    kernel's schedstat; 0 where it does not say (the check is then simply stricter)."""
    try:
        with open("/proc/thread-self/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


class BlockingCallbacks:
    """Callbacks that held the event loop for ``limit`` seconds or more by themselves.

    asyncio's slow-callback log times a callback by the wall clock, so on a shared machine a
    callback preempted by other processes shows up as slow although it blocked nothing. Each
    callback's wall time is taken here too, less the time the kernel kept the thread waiting
    for a CPU meanwhile: what is left is the time the callback ran or blocked (a sleep, a
    blocking read), which is what must stay under the limit."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.found: list[tuple[str, float]] = []
        self._original = asyncio.events.Handle._run

    def __enter__(self) -> "BlockingCallbacks":
        original, found, limit = self._original, self.found, self.limit

        def timed_run(handle: asyncio.events.Handle) -> None:
            started, queued = time.perf_counter(), runqueue_wait()
            try:
                original(handle)
            finally:
                held = (time.perf_counter() - started) - (runqueue_wait() - queued)
                if held >= limit:
                    found.append((repr(handle)[:300], round(held, 3)))

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.events.Handle._run = self._original  # type: ignore[method-assign]


@pytest.mark.gen_test(timeout=60)
async def test_ten_replies_stream_without_blocking_the_event_loop(fetch, ws_connect, fake_openai):
    fake_openai.default = Script(tokens=[f"w{n} " for n in range(60)], delay=0.005)
    conversations = [await joined_conversation(fetch, ws_connect) for _ in range(10)]
    loop = asyncio.get_running_loop()
    watcher = SlowCallbacks()
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(watcher)
    loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
    # What was allocated before (the app, the fixtures) is left out of the collector's full
    # passes, which would otherwise land, at random, inside some callback and be timed with it.
    gc.collect()
    gc.freeze()
    loop.set_debug(True)
    try:
        with BlockingCallbacks(SLOW_CALLBACK_SECONDS) as blocking:
            await asyncio.gather(*(ask(fetch, cid, f"question {n}") for n, (cid, _) in enumerate(conversations)))
            replies = await asyncio.gather(*(reply_frames(socket) for _, socket in conversations))
    finally:
        loop.set_debug(False)
        gc.unfreeze()
        asyncio_log.removeHandler(watcher)
    for (cid, _), frames in zip(conversations, replies):
        assert check_reply(frames, cid)["content"] == "".join(f"w{n} " for n in range(60))
    # Every slow-callback warning asyncio logged must be explained by the scheduler alone.
    assert blocking.found == [], watcher.records


@pytest.mark.gen_test(timeout=60)
async def test_the_blocking_check_sees_a_blocked_loop():
    """The check above can fail: a callback that sleeps 60 ms is caught, however busy the machine."""
    with BlockingCallbacks(SLOW_CALLBACK_SECONDS) as blocking:
        asyncio.get_running_loop().call_soon(time.sleep, 0.06)
        await asyncio.sleep(0.1)
    assert [held for _, held in blocking.found if held >= 0.06]
