"""The AI provider interface, and finding a provider by name.

A provider turns a list of chat messages into a stream of text deltas. Providers are plugins of
their own: a distribution registers a class under the ``vachat.ai_providers`` entry-point group
(``echo = plugins.ai.providers.echo:EchoProvider``) and ``AI_PROVIDER`` names which one runs.
The class is built with a ``ProviderSettings`` and must:

- ``stream(messages)``: return a ``ReplyStream`` at once (no I/O yet);
- ``aclose()``: release what it holds (connection pools) at shutdown.

A ``ReplyStream`` is an async iterator of non-empty text deltas, in order. When it ends it
knows its ``usage`` and ``finish_reason``; ``cancel()`` stops it from any task and closes the
upstream connection at once (the iterating task then gets ``StreamCancelled``). Failures are
``ProviderError`` (``ProviderTimeout`` for a timeout), with ``started`` telling whether a delta
had already been produced.

This module must never import vachat beyond ``vachat.plugin_api``, and a provider must never
block the IOLoop: every wait is an ``await``.
"""

from __future__ import annotations

import abc
import asyncio
import importlib.metadata
import math
from dataclasses import dataclass
from typing import Any, AsyncGenerator, Literal, Mapping, Sequence, TypedDict

__all__ = [
    "ENTRY_POINT_GROUP", "ChatMessage", "Usage", "ReplyOptions", "ProviderSettings", "Provider", "ReplyStream",
    "ProviderError", "ProviderTimeout", "StreamCancelled", "estimate_tokens", "load_provider",
    "available_providers",
]

ENTRY_POINT_GROUP = "vachat.ai_providers"
# The usual rule of thumb for English text and BPE tokenizers: about four characters a token.
# Used wherever a provider does not report usage, and for the context budget (README: AI).
CHARS_PER_TOKEN = 4


class ChatMessage(TypedDict):
    """One message of the context, in the chat-completions shape."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    #: True when the counts are ceil(characters / 4) rather than the provider's own.
    estimated: bool

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ReplyOptions:
    """What the caller asks of one reply (``metadata.generation`` of the message it answers):
    ``None`` leaves it to the provider."""

    #: The most tokens the reply may have; a reply cut there ends with ``length``.
    max_tokens: int | None = None
    #: Sampling temperature, 0 to 2 (the chat-completions range).
    temperature: float | None = None


@dataclass(frozen=True)
class ProviderSettings:
    """What a provider is configured with (``[plugins.ai]``)."""

    base_url: str = ""
    api_key: str = ""
    model: str = ""
    #: Seconds from the request to the first delta, retries included.
    timeout: float = 30.0
    #: Seconds allowed between two deltas once the reply has started.
    idle_timeout: float = 60.0
    #: Retries before the first delta (429, 5xx, connection failures).
    max_retries: int = 2
    #: Seconds between the echo provider's tokens.
    echo_delay: float = 0.02

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ProviderSettings":
        return cls(base_url=config.get("base_url", ""), api_key=config.get("api_key", ""),
                   model=config.get("model", ""), timeout=float(config.get("timeout", 30)),
                   idle_timeout=float(config.get("idle_timeout", 60)),
                   max_retries=int(config.get("max_retries", 2)), echo_delay=float(config.get("echo_delay", 0.02)))


class ProviderError(Exception):
    """The provider failed. The message is safe to show a user (no keys, no stack)."""

    def __init__(self, message: str, *, status: int | None = None, started: bool = False) -> None:
        super().__init__(message)
        self.status = status
        #: Whether deltas had already been produced (then nothing was retried).
        self.started = started


class ProviderTimeout(ProviderError):
    """No first delta within ``timeout``, or no next one within ``idle_timeout``."""


class StreamCancelled(Exception):
    """The stream was cancelled (``ReplyStream.cancel``); its upstream is closed."""


def estimate_tokens(text: str) -> int:
    """ceil(characters / 4): the estimate used when a provider reports no usage."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class ReplyStream(abc.ABC):
    """One reply being generated: ``async for delta in stream``.

    Subclasses implement ``_deltas()`` (an async generator of text pieces, which closes its
    upstream in its ``finally``) and set ``usage`` / ``finish_reason`` when it ends.
    """

    def __init__(self, messages: Sequence[ChatMessage], options: ReplyOptions | None = None) -> None:
        self.messages = list(messages)
        self.options = options or ReplyOptions()
        self.text_parts: list[str] = []
        self.usage: Usage | None = None
        #: ``stop`` or ``length`` once the stream ended normally.
        self.finish_reason: str | None = None
        self._generator: AsyncGenerator[str, None] | None = None
        self._reader: asyncio.Task[Any] | None = None
        self._cancelled = False

    @abc.abstractmethod
    def _deltas(self) -> AsyncGenerator[str, None]:
        """The deltas, from the upstream; an async generator."""

    def __aiter__(self) -> "ReplyStream":
        return self

    async def __anext__(self) -> str:
        if self._cancelled:
            raise StreamCancelled("the reply was cancelled")
        if self._generator is None:
            self._generator = self._deltas()
        self._reader = asyncio.current_task()
        try:
            delta = await self._generator.__anext__()
        except asyncio.CancelledError:
            # Our own cancel() interrupted the read: the generator closed its upstream on
            # the way out. Anyone else's cancellation (a shutdown) goes on as it came.
            if self._cancelled and self._reader is not None and self._reader.uncancel() == 0:
                raise StreamCancelled("the reply was cancelled") from None
            raise
        except StopAsyncIteration:
            self._finish()
            raise
        finally:
            self._reader = None
        self.text_parts.append(delta)
        return delta

    async def cancel(self) -> None:
        """Stop now, from any task: the upstream connection is closed before this returns
        (or, when a read is in progress in another task, as that read unwinds)."""
        if self._cancelled:
            return
        self._cancelled = True
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            return
        await self.aclose()

    async def aclose(self) -> None:
        """Release the upstream (idempotent); call it when you stop iterating early."""
        generator, self._generator = self._generator, None
        if generator is not None:
            await generator.aclose()

    def _finish(self) -> None:
        if self.finish_reason is None:
            self.finish_reason = "stop"
        if self.usage is None:
            self.usage = self.estimated_usage()

    def estimated_usage(self) -> Usage:
        """ceil(characters / 4) of the prompt and of what was produced so far."""
        prompt = sum(estimate_tokens(m["content"]) for m in self.messages)
        return Usage(prompt, estimate_tokens("".join(self.text_parts)), estimated=True)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


class Provider(abc.ABC):
    """A source of replies; one instance per application."""

    #: The name it is registered under (metadata ``provider``).
    name: str = ""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings

    @property
    def model(self) -> str:
        """The model name reported in each reply's metadata."""
        return self.settings.model

    @abc.abstractmethod
    def stream(self, messages: Sequence[ChatMessage], options: ReplyOptions | None = None) -> ReplyStream:
        """A reply to ``messages`` (system first, then the conversation, oldest first), within
        ``options`` (honour what the model supports; ``None`` when the caller asked nothing)."""

    async def aclose(self) -> None:
        """Release connections at shutdown."""


def available_providers() -> dict[str, importlib.metadata.EntryPoint]:
    return {entry_point.name: entry_point
            for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load_provider(name: str, settings: ProviderSettings) -> Provider:
    """The provider registered as ``name``; ``LookupError`` naming the ones there are."""
    entry_points = available_providers()
    if name not in entry_points:
        known = ", ".join(sorted(entry_points)) or "none"
        raise LookupError(f"AI_PROVIDER={name!r} is not an installed AI provider "
                          f"(entry-point group {ENTRY_POINT_GROUP}; installed: {known})")
    provider_class = entry_points[name].load()
    if not (isinstance(provider_class, type) and issubclass(provider_class, Provider)):
        raise LookupError(f"AI provider {name!r} ({entry_points[name].value}) is not a Provider class")
    provider = provider_class(settings)
    provider.name = provider.name or name
    return provider
