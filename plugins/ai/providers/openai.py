"""The ``openai`` provider: any OpenAI-compatible chat-completions server (OpenAI, Ollama, vLLM,
llama.cpp), streamed over server-sent events.

``POST {AI_BASE_URL}/chat/completions`` with ``stream: true`` and
``stream_options: {include_usage: true}``; each ``data:`` event carries a chunk whose
``choices[0].delta.content`` is the next piece of text, a last chunk may carry ``usage``, and
``data: [DONE]`` ends the stream. Without a ``usage`` chunk the counts are estimated
(ceil(characters / 4)) and marked so.

Why httpx (with httpx-sse for the event framing) and not Tornado's ``AsyncHTTPClient``: a
generation must be stoppable at once, and ``AsyncHTTPClient`` cannot cancel a fetch in flight
(its streaming callback can only fail the request at the next chunk, which never comes from a
stalled server). httpx is asyncio-native: cancelling the task that reads, or closing the
response, closes the socket there and then (a response dropped before its end is never put
back in the pool), and its connect/read timeouts are real socket timeouts.

Timeouts: ``AI_TIMEOUT`` bounds the wait for the first delta, connection and retries included;
``AI_IDLE_TIMEOUT`` bounds each wait for the next delta after it. Retries (``AI_MAX_RETRIES``)
happen only before the first delta, on 429, 5xx and connection failures, with jittered
exponential back-off (or the server's ``Retry-After``) that never outlasts ``AI_TIMEOUT``.

This module must never block the IOLoop, never retry after a delta was produced (the user has
seen it), and never put the API key in a message or a log.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import random
from typing import Any, AsyncGenerator, AsyncIterator, Sequence

import httpx
import httpx_sse

from . import ChatMessage, Provider, ProviderError, ProviderSettings, ProviderTimeout, ReplyOptions, ReplyStream, Usage

__all__ = ["OpenAIProvider", "OpenAIStream"]

log = logging.getLogger("vachat.plugins.ai.openai")

# httpx reaches the network through anyio, which imports its asyncio backend on the first
# connection: ~20 ms on the IOLoop, in the first reply after every start (bench/ai_stream.py
# --loop-check). Imported with this module instead, at start-up. The backend's module is
# anyio's own business (no public name loads it): should a release move it, only this
# warm-up is lost, never the provider.
try:
    importlib.import_module("anyio._backends._asyncio")
except ImportError:
    log.debug("anyio's asyncio backend not found to import ahead", exc_info=True)

# Statuses worth another attempt: rate limited, or the server (or a proxy before it) failed.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Back-off before retry n (from 0): a random wait up to BASE * 2**n ("full jitter", so many
# generations failing together do not retry in step), at most MAX, and never past AI_TIMEOUT.
RETRY_BACKOFF_BASE_SECS = 0.25
RETRY_BACKOFF_MAX_SECS = 8.0
# How much of an error answer is read to say what went wrong (the rest is not waited for).
ERROR_BODY_LIMIT = 2048
# Connections kept open to the provider between replies; a busy node reuses them.
KEEPALIVE_CONNECTIONS = 20
MAX_CONNECTIONS = 200
# The model asked for when AI_MODEL is empty (servers with one model ignore it).
DEFAULT_MODEL = "gpt-4o-mini"


class _Retryable(ProviderError):
    """A failure before the first delta that another attempt may not have."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class OpenAIStream(ReplyStream):
    def __init__(self, provider: "OpenAIProvider", messages: Sequence[ChatMessage],
                 options: ReplyOptions | None = None) -> None:
        super().__init__(messages, options)
        self.provider = provider
        self.attempts = 0

    async def _deltas(self) -> AsyncGenerator[str, None]:
        settings = self.provider.settings
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + settings.timeout
        response: httpx.Response | None = None
        try:
            while True:
                self.attempts += 1
                try:
                    try:
                        async with asyncio.timeout_at(first_deadline):
                            response = await self.provider.send(self.messages, self.options)
                            await _check_status(response)
                            events = httpx_sse.EventSource(response).aiter_sse()
                            first = await self._next_delta(events, started=False)
                    except TimeoutError:
                        raise ProviderTimeout(f"the AI provider sent nothing within {settings.timeout:g}s") from None
                    break
                except _Retryable as error:
                    await _close(response)
                    response = None
                    delay = _backoff(self.attempts - 1, error.retry_after)
                    if self.attempts > settings.max_retries or loop.time() + delay >= first_deadline:
                        raise ProviderError(str(error), status=error.status) from None
                    log.info("AI provider failed, retrying", extra={"error": str(error), "attempt": self.attempts,
                                                                    "delay": round(delay, 3)})
                    await asyncio.sleep(delay)
            if first is None:
                return
            yield first
            while True:
                try:
                    async with asyncio.timeout(settings.idle_timeout):
                        delta = await self._next_delta(events, started=True)
                except TimeoutError:
                    raise ProviderTimeout(f"the AI provider stopped sending for {settings.idle_timeout:g}s",
                                          started=True) from None
                if delta is None:
                    return
                yield delta
        finally:
            await _close(response)

    async def _next_delta(self, events: AsyncIterator[httpx_sse.ServerSentEvent], *, started: bool) -> str | None:
        """The next non-empty piece of text, or None at the end of the stream. Chunks without
        text (the role, a finish reason, usage) are taken in on the way."""
        try:
            async for event in events:
                if event.data.strip() == "[DONE]":
                    return None
                if not event.data.strip():
                    continue
                delta = self._take_chunk(event.data, started)
                if delta:
                    return delta
        except httpx_sse.SSEError as error:
            raise ProviderError(f"the AI provider did not stream: {error}", started=started) from None
        except (httpx.TransportError, httpx.StreamError) as error:
            message = f"the connection to the AI provider failed: {type(error).__name__}"
            if started:
                raise ProviderError(message, started=True) from None
            raise _Retryable(message) from None
        return None  # ended without [DONE]: what came is the reply

    def _take_chunk(self, data: str, started: bool) -> str:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ProviderError("the AI provider sent a chunk that is not JSON", started=started) from None
        if not isinstance(chunk, dict):
            raise ProviderError("the AI provider sent a chunk that is not an object", started=started)
        if chunk.get("error"):
            error = chunk["error"]
            text = error.get("message") if isinstance(error, dict) else str(error)
            raise ProviderError(f"the AI provider failed: {str(text)[:200]}", started=started)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                               estimated=False)
        text = ""
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str):
                text += content
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reason = "length" if reason == "length" else "stop"
        return text


async def _check_status(response: httpx.Response) -> None:
    if response.status_code == 200:
        return
    body = b""
    try:
        async for piece in response.aiter_raw():
            body += piece
            if len(body) >= ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass
    status = response.status_code
    log.warning("AI provider answered an error", extra={"status": status,
                                                       "body": body[:ERROR_BODY_LIMIT].decode("utf-8", "replace")})
    message = f"the AI provider answered HTTP {status}"
    if status in RETRYABLE_STATUSES:
        raise _Retryable(message, status=status, retry_after=_retry_after(response))
    raise ProviderError(message, status=status)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None  # absent, or an HTTP date: use our own back-off


def _backoff(retry: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, RETRY_BACKOFF_MAX_SECS)
    return random.uniform(0, min(RETRY_BACKOFF_MAX_SECS, RETRY_BACKOFF_BASE_SECS * 2 ** retry))


async def _close(response: httpx.Response | None) -> None:
    if response is not None:
        # Not read to its end, so httpx closes the connection rather than pooling it: the
        # server sees the client go at once.
        await response.aclose()


class OpenAIProvider(Provider):
    name = "openai"

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        if not settings.base_url:
            raise LookupError("the openai AI provider needs AI_BASE_URL (the server's base, with /v1)")
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        # Socket-level limits as a backstop; the first-token and idle deadlines are enforced
        # around each read (see OpenAIStream).
        timeout = httpx.Timeout(connect=settings.timeout, read=max(settings.timeout, settings.idle_timeout),
                                write=settings.timeout, pool=settings.timeout)
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=KEEPALIVE_CONNECTIONS)
        self.client = httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits)

    @property
    def model(self) -> str:
        return self.settings.model or DEFAULT_MODEL

    def stream(self, messages: Sequence[ChatMessage], options: ReplyOptions | None = None) -> ReplyStream:
        return OpenAIStream(self, messages, options)

    async def send(self, messages: Sequence[ChatMessage], options: ReplyOptions | None = None) -> httpx.Response:
        """Start one attempt: the request sent, the answer's headers read, its body not yet."""
        body: dict[str, Any] = {"model": self.model, "messages": list(messages), "stream": True,
                                "stream_options": {"include_usage": True}}
        if options is not None and options.max_tokens is not None:
            body["max_tokens"] = options.max_tokens
        if options is not None and options.temperature is not None:
            body["temperature"] = options.temperature
        request = self.client.build_request("POST", self.url, json=body)
        try:
            return await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            raise _Retryable("the AI provider did not answer in time") from None
        except httpx.TransportError as error:
            raise _Retryable(f"could not reach the AI provider: {type(error).__name__}") from None

    async def aclose(self) -> None:
        await self.client.aclose()
