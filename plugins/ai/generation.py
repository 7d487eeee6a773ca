"""One assistant reply being generated: from the context to the stored message (README: AI; docs/websocket.md).

Frames, in order, to ``conversation:<id>``: ``ai-typing {typing: true}``, ``ai-delta
{conversationId, messageId, index, delta}`` (index 0, 1, 2 …), ``ai-done {conversationId,
messageId, finishReason}``, the stored message as ``new-message`` (sent by chat's service),
``ai-typing {typing: false}``. The stored content is exactly the concatenated deltas.

Deltas are coalesced: the provider's pieces are gathered and published at most
``1 / FRAME_INTERVAL_SECS`` times a second per reply (the first at once), so a fast model
costs clients a bounded number of frames without changing the text.

The reply ends with ``stop``/``length`` (the provider finished), ``cancelled``
(``stop-generation``), ``shutdown`` (the server stopping) or ``error`` (the provider failed or
timed out: an ``error``-type message saying what failed is stored instead, the partial text in
its ``metadata.partialContent``); ``interrupted`` when this node dies, stored by another
(``recovery``).

This module must never block the IOLoop, publish a delta before its progress is recorded
(see ``progress``), or lose a reply it started: whatever ends it, something is stored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from vachat.plugin_api import ApiError, NotFound, ValidationFailed

from .providers import ProviderError, ProviderTimeout, StreamCancelled, Usage

if TYPE_CHECKING:  # pragma: no cover
    from .assistant import Assistant

__all__ = ["Generation", "FRAME_INTERVAL_SECS", "CLAIM_REFRESHES_PER_TTL"]

log = logging.getLogger("vachat.plugins.ai")

# At most 20 ai-delta frames a second per reply: smooth to read, and a model streaming
# hundreds of tokens a second costs each client 20 frames, not hundreds.
FRAME_INTERVAL_SECS = 0.05
# The claim (AI_CLAIM_TTL, ``Assistant.claim_ttl``) is refreshed this many times per lifetime
# while a reply runs: a refresh may be late or lost twice before the claim of a live node
# expires, and a dead node's expires within one lifetime of its last refresh.
CLAIM_REFRESHES_PER_TTL = 3


def room(conversation_id: str) -> str:
    return f"conversation:{conversation_id}"


class Generation:
    """One reply; ``run()`` is its task. ``stop(reason)`` ends it from any task."""

    def __init__(self, assistant: "Assistant", *, conversation: dict[str, Any], parent_id: str,
                 user_id: str, message_id: str, token: str) -> None:
        self.assistant = assistant
        self.app = assistant.app
        self.conversation = conversation
        self.conversation_id: str = conversation["id"]
        self.parent_id = parent_id
        self.user_id = user_id
        self.message_id = message_id
        self.token = token
        #: Published text, and the index of the last ai-delta that carried it.
        self.text = ""
        self.index = -1
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._finished = asyncio.Event()
        self._stream: Any = None
        self.stop_reason: str | None = None
        self.first_token_at: float | None = None
        self.task: asyncio.Task[None] | None = None

    # -- what a join sees ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {"messageId": self.message_id, "text": self.text, "index": self.index}

    # -- stopping --------------------------------------------------------------------------

    async def stop(self, reason: str = "cancelled") -> None:
        """End the reply now (``cancelled`` or ``shutdown``): the upstream is closed and what
        was generated so far is stored."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        if self._stream is not None:
            await self._stream.cancel()

    # -- the reply -------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        keepalive = asyncio.ensure_future(self._keep_claim())
        flusher = asyncio.ensure_future(self._flush_frames())
        try:
            await self.app.publish(room(self.conversation_id), "ai-typing",
                                   {"conversationId": self.conversation_id, "typing": True})
            await self._advance("", -1)
            finish_reason, failure = await self._generate()
            self._finished.set()
            self._wake.set()
            await flusher  # the last coalesced delta goes out before ai-done
            await self.app.publish(room(self.conversation_id), "ai-done", {
                "conversationId": self.conversation_id, "messageId": self.message_id, "finishReason": finish_reason})
            usage = self._usage(failure)
            latency = loop.time() - started
            first_token = self.first_token_at - started if self.first_token_at is not None else None
            metadata: dict[str, Any] = {
                "provider": self.assistant.provider.name, "model": self.assistant.provider.model,
                "finishReason": finish_reason, "promptTokens": usage.prompt_tokens if usage else 0,
                "completionTokens": usage.completion_tokens if usage else 0,
                "usageEstimated": usage.estimated if usage else False, "latency": int(latency * 1000),
            }
            if first_token is not None:
                metadata["timeToFirstToken"] = int(first_token * 1000)
            if failure is None:
                content, kind = self.text, "text"
            else:
                metadata["error"] = failure
                if self.text:
                    metadata["partialContent"] = self.text
                content, kind = f"The assistant could not answer: {failure}.", "error"
            if usage is not None and usage.total_tokens:
                await self.assistant.usage.record(self.user_id, usage)
            await self._store(content, kind, metadata)
            self.assistant.count_reply(finish_reason, usage, first_token, latency)
        finally:
            self._finished.set()
            self._wake.set()
            keepalive.cancel()
            if not flusher.done():
                flusher.cancel()
            if self._stream is not None:
                await self._stream.aclose()
            await self.assistant.slots.release(self.conversation_id, self.token)
            self.assistant.forget(self)
            await self.app.publish(room(self.conversation_id), "ai-typing",
                                   {"conversationId": self.conversation_id, "typing": False})

    async def _generate(self) -> tuple[str, str | None]:
        """Stream the provider's reply into the frames: ``(finishReason, failure or None)``."""
        loop = asyncio.get_running_loop()
        try:
            messages = await self.assistant.context(self.conversation, self.parent_id)
            if self.stop_reason is None:
                self._stream = self.assistant.provider.stream(messages)
                async for delta in self._stream:
                    if self.first_token_at is None:
                        self.first_token_at = loop.time()
                    self._pending.append(delta)
                    self._wake.set()
        except StreamCancelled:
            pass
        except (ProviderError, ApiError) as error:  # ApiError: a plugin's ai_before_request refused
            kind = "timeout" if isinstance(error, ProviderTimeout) else "error" if isinstance(error, ProviderError) \
                else "refused"
            failure = error.message if isinstance(error, ApiError) else str(error)
            self.assistant.count_error(kind)
            log.warning("AI reply failed", extra={"conversationId": self.conversation_id, "error": failure})
            return "error", failure
        if self.stop_reason is not None:
            return self.stop_reason, None
        return (self._stream.finish_reason if self._stream is not None else None) or "stop", None

    def _usage(self, failure: str | None) -> Usage | None:
        """What the reply cost: the provider's count, else an estimate; nothing when nothing
        was produced because it failed or was stopped before it was asked."""
        if self._stream is None or (failure is not None and not self.text):
            return None
        return self._stream.usage or self._stream.estimated_usage()

    async def _store(self, content: str, kind: str, metadata: dict[str, Any]) -> None:
        chat = self.assistant.chat
        try:
            await chat.store_assistant_message(self.conversation_id, content, type=kind, parent_id=self.parent_id,
                                               metadata=metadata, message_id=self.message_id)
        except ValidationFailed:
            # The message it answers was deleted meanwhile: the reply goes on the current branch.
            await chat.store_assistant_message(self.conversation_id, content, type=kind, metadata=metadata,
                                               message_id=self.message_id)
        except NotFound:
            log.info("the conversation was deleted during the reply; nothing stored",
                     extra={"conversationId": self.conversation_id})

    async def _flush_frames(self) -> None:
        """Publish what the provider gave, at most once per FRAME_INTERVAL_SECS."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending:
                await self._publish_delta()
            if self._finished.is_set() and not self._pending:
                return
            try:
                await asyncio.wait_for(self._finished.wait(), FRAME_INTERVAL_SECS)
            except asyncio.TimeoutError:
                pass

    async def _publish_delta(self) -> None:
        delta = "".join(self._pending)
        self._pending.clear()
        # Recorded (here and, for other nodes, in Redis) before it is published: a join that
        # reads the progress then finds the deltas after it held, never a gap.
        self.text += delta
        self.index += 1
        index = self.index
        await self._advance(delta, index)
        await self.app.publish(room(self.conversation_id), "ai-delta", {
            "conversationId": self.conversation_id, "messageId": self.message_id, "index": index, "delta": delta})

    async def _advance(self, delta: str, index: int) -> None:
        await self.assistant.slots.advance(self.conversation_id, self.message_id, delta, index,
                                           self.assistant.claim_ttl, parent_id=self.parent_id, user_id=self.user_id)

    async def _keep_claim(self) -> None:
        ttl = self.assistant.claim_ttl
        while True:
            await asyncio.sleep(ttl / CLAIM_REFRESHES_PER_TTL)
            await self.assistant.slots.extend(self.conversation_id, self.token, ttl)
