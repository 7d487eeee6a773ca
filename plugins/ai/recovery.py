"""Replies orphaned by a node that died mid-generation (SIGKILL, a crash, a lost host).

A reply's text lives in the generating node's memory, so a dead node would take it along, and
its claim would keep the conversation refusing requests. What makes it recoverable is the
progress record the generating node writes to Redis *before* publishing each delta
(``progress.advance``): the reply's message id, the index of the last delta, the text so far,
the message it answers and who asked. The record outlives the claim (``PROGRESS_RETAIN_SECS``)
and the conversation is listed in a ``running`` set until the reply is released, so:

- the claim expires ``AI_CLAIM_TTL`` seconds after the node's last refresh (it refreshes every
  third of that while alive); the conversation accepts a new request from then on;
- another node then finishes the dead node's reply: it stores the text streamed so far (what
  clients saw, or one delta more if the node died between recording a delta and publishing
  it) with ``finishReason: "interrupted"``, publishing ``ai-done`` and, through chat,
  ``new-message``, then ``ai-typing {typing: false}``, so no client is left with the
  assistant "typing". Two paths find an orphan: every node's ``Sweeper`` (every third of the
  claim's lifetime), and a node taking the conversation's claim for a new request, which
  stores the orphan first so the new question follows it. ``progress.take_orphan`` (one Redis
  script) hands an orphan to exactly one of them.

Without Redis there is one node, and its replies die with it: nothing is left to recover. If
the recovering node dies too before it stored the reply, that reply is lost (two failures).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from vachat.plugin_api import NotFound, ValidationFailed, stop_task

from .generation import ReplyOwner

__all__ = ["Sweeper", "store_orphan", "INTERRUPTED", "Recoverer"]

log = logging.getLogger("vachat.plugins.ai")

INTERRUPTED = "interrupted"
# A sweep at least this often (s), however long the claims live: an orphan of a long-lived
# claim is still finished within seconds of its expiry.
MAX_SWEEP_INTERVAL_SECS = 10.0
# And at most this often: a very short AI_CLAIM_TTL (tests) must not turn the sweep into a busy loop.
MIN_SWEEP_INTERVAL_SECS = 0.5


class Recoverer(ReplyOwner, Protocol):
    """What finishing another node's reply needs of the ``Assistant`` (declared here, so this
    module does not import the assistant's, which builds on it)."""

    @property
    def running(self) -> dict[str, Any]:
        """conversation id → the reply this node is generating there."""
        ...


async def store_orphan(assistant: Recoverer, conversation_id: str, orphan: dict[str, Any]) -> None:
    """Finish a dead node's reply: ``ai-done`` (interrupted), the stored text, ``ai-typing`` off."""
    app, chat = assistant.app, assistant.chat
    message_id = orphan["messageId"]
    room = f"conversation:{conversation_id}"
    log.warning("storing a reply interrupted by the death of its node",
                extra={"conversationId": conversation_id, "messageId": message_id})
    await app.publish(room, "ai-done", {"conversationId": conversation_id, "messageId": message_id,
                                        "finishReason": INTERRUPTED})
    metadata = {"provider": assistant.provider.name, "model": assistant.provider.model,
                "finishReason": INTERRUPTED, "promptTokens": 0, "completionTokens": 0, "usageEstimated": False}
    try:
        if await chat.get_message(message_id) is None:  # the node may have died just after storing it
            try:
                await chat.store_assistant_message(conversation_id, orphan.get("text") or "", parent_id=orphan.get("parentId"),
                                                   metadata=metadata, message_id=message_id)
            except ValidationFailed:  # the question was deleted meanwhile: on the current branch
                await chat.store_assistant_message(conversation_id, orphan.get("text") or "", metadata=metadata,
                                                   message_id=message_id)
    except NotFound:
        log.info("the conversation of an interrupted reply is gone; nothing stored",
                 extra={"conversationId": conversation_id})
    await app.publish(room, "ai-typing", {"conversationId": conversation_id, "typing": False})


class Sweeper:
    """Every node's periodic look for orphaned replies (see the module docstring)."""

    def __init__(self, assistant: Recoverer) -> None:
        self.assistant = assistant
        self.interval = min(MAX_SWEEP_INTERVAL_SECS, max(MIN_SWEEP_INTERVAL_SECS, assistant.claim_ttl / 3))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception:  # a failed sweep is retried at the next; it must not end them
                log.exception("sweeping for interrupted AI replies failed")

    async def sweep(self) -> int:
        """Finish every orphan found now; how many."""
        slots, found = self.assistant.slots, 0
        for conversation_id in await slots.orphan_candidates():
            if conversation_id in self.assistant.running:
                continue  # ours and alive
            orphan = await slots.take_orphan(conversation_id)
            if orphan is not None:
                found += 1
                await store_orphan(self.assistant, conversation_id, orphan)
        return found
