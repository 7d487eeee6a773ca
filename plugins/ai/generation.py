"""One assistant reply being generated: from the context to the stored message (README: AI; docs/websocket.md).

Frames, in order, to the conversation's room (``ChatService.room_of``): ``ai-typing {typing: true}``, ``ai-delta
{conversationId, messageId, index, delta}`` (index 0, 1, 2 …), ``ai-done {conversationId,
messageId, finishReason}``, the stored message as ``new-message`` (sent by chat's service),
``ai-typing {typing: false}``. The stored content is exactly the concatenated deltas.

Deltas are coalesced: the provider's pieces are gathered and published at most
``1 / FRAME_INTERVAL_SECS`` times a second per reply (the first at once), so a fast model
costs clients a bounded number of frames without changing the text.

The reply ends with ``stop``/``length`` (the provider finished, or the reply reached the
completion allowance its quota reservation holds: see ``usage``), ``cancelled``
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
from typing import Any, Awaitable, Callable, Protocol, TypeVar

from plugins.chat.api import ChatService
from vachat.plugin_api import ApiError, App, NotFound, Unavailable, ValidationFailed

from .progress import GenerationSlots
from .providers import (
    CHARS_PER_TOKEN, ChatMessage, Provider, ProviderError, ProviderTimeout, ReplyOptions, ReplyStream, StreamCancelled,
    Usage, estimate_tokens,
)
from .usage import Reservation, UsageBook

__all__ = ["Generation", "ReplyOwner", "FRAME_INTERVAL_SECS", "CLAIM_REFRESHES_PER_TTL"]

log = logging.getLogger("vachat.plugins.ai")

# At most 20 ai-delta frames a second per reply: smooth to read, and a model streaming
# hundreds of tokens a second costs each client 20 frames, not hundreds.
FRAME_INTERVAL_SECS = 0.05
# The claim (AI_CLAIM_TTL, ``ReplyOwner.claim_ttl``) is refreshed this many times per lifetime
# while a reply runs: a refresh may be late or lost twice before the claim of a live node
# expires, and a dead node's expires within one lifetime of its last refresh.
CLAIM_REFRESHES_PER_TTL = 3
# How long a finished reply keeps trying to reach the database while it is away or busy (s):
# the request was accepted, so its answer (or the error saying why there is none) must be
# stored; a minute covers a failover or a restart of the database, and the claim is kept meanwhile.
STORE_RETRY_SECS = 60.0
# A reply hands the loop back after this many deltas read in a row. When the server falls
# behind a fast provider, the reply's connection holds many deltas, each read without waiting,
# and one reply read them all in one go (tens of milliseconds under load) while every other
# socket and request waited.
DELTAS_PER_TURN = 16

T = TypeVar("T")



class ReplyOwner(Protocol):
    """What a reply needs from whoever started it (the ``Assistant``): declared here, so that a
    reply is understood without the assistant's module, which builds on this one."""

    @property
    def app(self) -> App: ...

    @property
    def chat(self) -> ChatService: ...

    @property
    def provider(self) -> Provider: ...

    @property
    def slots(self) -> GenerationSlots: ...

    @property
    def usage(self) -> UsageBook: ...

    @property
    def ending(self) -> dict[str, asyncio.Event]:
        """Replies being stored, by conversation: each event is set once its slot is free."""
        ...

    @property
    def claim_ttl(self) -> float:
        """Seconds a reply's claim lives without a refresh (AI_CLAIM_TTL)."""
        ...

    async def context(self, conversation: dict[str, Any], leaf_id: str) -> list[ChatMessage]:
        """The messages sent to the provider for a reply to ``leaf_id``."""
        ...

    def count_reply(self, finish_reason: str, usage: Usage | None, first_token: float | None,
                    latency: float) -> None: ...

    def count_error(self, kind: str) -> None: ...

    def forget(self, generation: Generation) -> None:
        """The reply ended: stop tracking it."""
        ...


class Generation:
    """One reply; ``run()`` is its task. ``stop(reason)`` ends it from any task."""

    def __init__(self, assistant: ReplyOwner, *, conversation: dict[str, Any], parent_id: str,
                 user_id: str, message_id: str, token: str, reservation: Reservation,
                 options: ReplyOptions | None = None) -> None:
        self.assistant = assistant
        self.app = assistant.app
        self.conversation = conversation
        self.conversation_id: str = conversation["id"]
        #: The conversation's room, as chat names it: its events go there.
        self.room = assistant.chat.room_of(self.conversation_id)
        self.parent_id = parent_id
        self.user_id = user_id
        self.message_id = message_id
        self.token = token
        self.reservation = reservation
        #: What the reply may still produce (None: no cap), set once the context is known: its
        #: allowance in tokens, counted both as deltas (a provider's delta is at least a token)
        #: and as characters (ceil(characters / 4)), whichever runs out first.
        self._room: int | None = None
        self._deltas_left: int | None = None
        self._kept_deltas = 0
        self._cut = False
        self._settled = False
        self.options = options
        #: Published text, and the index of the last ai-delta that carried it.
        self.text = ""
        self.index = -1
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._finished = asyncio.Event()
        self._stream: ReplyStream | None = None
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
            await self.app.publish(self.room, "ai-typing",
                                   {"conversationId": self.conversation_id, "typing": True})
            await self._advance("", -1)
            finish_reason, failure = await self._generate()
            self._finished.set()
            self._wake.set()
            await flusher  # the last coalesced delta goes out before ai-done
            await self.app.publish(self.room, "ai-done", {
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
            self._settled = True
            await self._when_database_answers(lambda: self.assistant.usage.settle(self.reservation, usage))
            self.assistant.ending[self.conversation_id] = asyncio.Event()  # set once the slot is free
            await self._when_database_answers(lambda: self._store(content, kind, metadata))
            self.assistant.count_reply(finish_reason, usage, first_token, latency)
        finally:
            # Stored (or failed): no longer running here, before the awaits below, so a
            # stop-generation sent on seeing the stored reply finds nothing running.
            self.assistant.forget(self)
            if not self._settled:  # failed before it knew its cost: the tokens go back
                self._settled = True
                await self.assistant.usage.settle(self.reservation, None)
            self._finished.set()
            self._wake.set()
            keepalive.cancel()
            if not flusher.done():
                flusher.cancel()
            if self._stream is not None:
                await self._stream.aclose()
            await self.assistant.slots.release(self.conversation_id, self.token)
            released = self.assistant.ending.pop(self.conversation_id, None)
            if released is not None:
                released.set()
            await self.app.publish(self.room, "ai-typing",
                                   {"conversationId": self.conversation_id, "typing": False})

    async def _generate(self) -> tuple[str, str | None]:
        """Stream the provider's reply into the frames: ``(finishReason, failure or None)``."""
        loop = asyncio.get_running_loop()
        try:
            messages = await self.assistant.context(self.conversation, self.parent_id)
            allowance = self.reservation.reply_allowance(sum(estimate_tokens(m["content"]) for m in messages))
            if allowance is not None:
                self._room, self._deltas_left = allowance * CHARS_PER_TOKEN, allowance
            if self.stop_reason is None:
                provider = self.assistant.provider
                # Options only when asked for: a provider written before options still works.
                self._stream = provider.stream(messages, self.options) if self.options else provider.stream(messages)
                read = 0
                async for delta in self._stream:
                    if self.first_token_at is None:
                        self.first_token_at = loop.time()
                    read += 1
                    if read % DELTAS_PER_TURN == 0:
                        await asyncio.sleep(0)
                    if self._room is not None and self._deltas_left is not None:
                        delta = delta[:self._room] if self._deltas_left else ""
                        self._room -= len(delta)
                        self._deltas_left -= 1
                        self._cut = self._room <= 0 or self._deltas_left <= 0
                    if delta:
                        self._kept_deltas += 1
                        self._pending.append(delta)
                        self._wake.set()
                    if self._cut:  # the allowance is spent: no more is asked for
                        await self._stream.cancel()
                        break
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
        if self._cut:
            return "length", None
        return (self._stream.finish_reason if self._stream is not None else None) or "stop", None

    def _usage(self, failure: str | None) -> Usage | None:
        """What the reply cost: the provider's count, else an estimate; nothing when nothing
        was produced because it failed or was stopped before it was asked."""
        if self._stream is None or (failure is not None and not self.text):
            return None
        if self._cut:  # stopped by us: the provider sent no count; the reply is what was kept
            completion = max(self._kept_deltas, estimate_tokens(self.text))
            return Usage(self._stream.estimated_usage().prompt_tokens, completion, estimated=True)
        return self._stream.usage or self._stream.estimated_usage()

    async def _when_database_answers(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation()``, tried again while the database is unavailable (after the wait
        ``Unavailable`` asks for), for at most ``STORE_RETRY_SECS``; a server stopping gives
        its replies a bounded time to store, so they do not wait on."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STORE_RETRY_SECS
        while True:
            try:
                return await operation()
            except Unavailable as error:
                wait = error.retry_after or Unavailable.RETRY_AFTER
                if self.stop_reason == "shutdown" or loop.time() + wait > deadline:
                    raise
                log.info("the database is unavailable; storing the reply again in %s s", wait,
                         extra={"conversationId": self.conversation_id})
                await asyncio.sleep(wait)

    async def _store(self, content: str, kind: str, metadata: dict[str, Any]) -> None:
        chat = self.assistant.chat
        try:
            try:
                message = await chat.store_assistant_message(
                    self.conversation_id, content, type=kind, parent_id=self.parent_id, metadata=metadata,
                    message_id=self.message_id)
            except ValidationFailed:
                # The message it answers was deleted meanwhile: the reply goes on the current branch.
                message = await chat.store_assistant_message(self.conversation_id, content, type=kind,
                                                             metadata=metadata, message_id=self.message_id)
        except NotFound:
            log.info("the conversation was deleted during the reply; nothing stored",
                     extra={"conversationId": self.conversation_id})
            return
        if self.app.hooks.implemented("ai_reply_completed"):
            await self.app.hooks.notify("ai_reply_completed", conversation=self.conversation, message=message)

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
        await self.app.publish(self.room, "ai-delta", {
            "conversationId": self.conversation_id, "messageId": self.message_id, "index": index, "delta": delta})
        if self.app.hooks.implemented("ai_reply_delta"):
            await self.app.hooks.notify("ai_reply_delta", conversation_id=self.conversation_id,
                                        message_id=self.message_id, index=index, delta=delta)

    async def _advance(self, delta: str, index: int) -> None:
        await self.assistant.slots.advance(self.conversation_id, self.message_id, delta, index,
                                           self.assistant.claim_ttl, parent_id=self.parent_id, user_id=self.user_id)

    async def _keep_claim(self) -> None:
        ttl = self.assistant.claim_ttl
        while True:
            await asyncio.sleep(ttl / CLAIM_REFRESHES_PER_TTL)
            await self.assistant.slots.extend(self.conversation_id, self.token, ttl)
