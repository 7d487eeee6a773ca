"""The ``echo`` provider: the embedded default, for development and tests.

Deterministic: the reply is ``Echo: `` and the last user message, streamed a word at a time
(each word with the whitespace after it) with ``AI_ECHO_DELAY`` seconds between words, so that
streaming, stop and resume can be watched and tested without a model. Its replies' metadata
names it (``provider: echo``, ``model: echo``), so nobody mistakes it for an assistant.
"""

from __future__ import annotations

import asyncio
import re
from typing import AsyncGenerator, Sequence

from . import ChatMessage, Provider, ReplyOptions, ReplyStream, Usage, estimate_tokens

__all__ = ["EchoProvider", "echo_reply"]

PREFIX = "Echo: "
# What it answers when the last user message has no text (files only).
NOTHING_TO_ECHO = "(nothing to echo)"
# A token: a run of non-space characters with the spaces that follow it (leading spaces are a
# token of their own), so the concatenated tokens are exactly the reply.
TOKEN = re.compile(r"\s+|\S+\s*")


def echo_reply(messages: Sequence[ChatMessage]) -> str:
    """The whole reply to ``messages``: what the echo provider streams."""
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return PREFIX + (last if last.strip() else NOTHING_TO_ECHO)


class EchoStream(ReplyStream):
    def __init__(self, messages: Sequence[ChatMessage], delay: float, options: ReplyOptions | None = None) -> None:
        super().__init__(messages, options)
        self.delay = delay

    async def _deltas(self) -> AsyncGenerator[str, None]:
        tokens = TOKEN.findall(echo_reply(self.messages))
        limit = self.options.max_tokens
        cut = limit is not None and len(tokens) > limit
        if cut:
            tokens = tokens[:limit]
        for position, token in enumerate(tokens):
            if position and self.delay:
                await asyncio.sleep(self.delay)
            yield token
        prompt = sum(estimate_tokens(m["content"]) for m in self.messages)
        # Its completion count is exact (it knows its tokens); the prompt's is estimated.
        self.usage = Usage(prompt, len(tokens), estimated=True)
        self.finish_reason = "length" if cut else "stop"


class EchoProvider(Provider):
    name = "echo"

    @property
    def model(self) -> str:
        return "echo"

    def stream(self, messages: Sequence[ChatMessage], options: ReplyOptions | None = None) -> ReplyStream:
        return EchoStream(messages, self.settings.echo_delay, options)
