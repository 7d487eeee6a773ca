"""The assistant of one application: its provider, its running replies, quotas and context.

``Assistant.of(app)`` is built once per application (``vachat_services``) and kept in
``app.plugin_state("ai")``. It starts a reply when chat asks (``chat_ai_reply_requested``) or
on regenerate, refuses one when the caller is over quota or the conversation already has one
running (``chat_message_before_store``, before anything is stored), answers joins with the
reply in progress (``chat_generation_status``), stops replies on ``stop-generation`` from any
node (a control message to the node generating), and at shutdown stops and stores every reply
still running. A reply whose node died is finished by another (``recovery``).

This module must never let two replies run in one conversation, or hand a provider a message
of another conversation (the context comes from chat's ``history`` of that conversation only).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any, Mapping

from vachat.plugin_api import App, Conflict, new_id

from .generation import Generation
from .metrics import AiMetrics
from .progress import GenerationSlots
from .recovery import Sweeper, store_orphan
from .providers import ChatMessage, Provider, ProviderSettings, Usage, estimate_tokens, load_provider
from .usage import UsageBook

__all__ = ["Assistant", "STOP_CONTROL", "PENDING_CLAIM_SECS", "SHUTDOWN_WAIT_SECS"]

log = logging.getLogger("vachat.plugins.ai")

# The control message that asks the node generating in a conversation to stop.
STOP_CONTROL = "ai-stop"
# A reply's slot is taken when its message is accepted (before it is stored, so a second
# request is refused with 409 rather than stored); storing takes milliseconds. If the message
# is refused after that (another plugin's check), the slot frees itself after this long.
PENDING_CLAIM_SECS = 5.0
# At shutdown, how long the replies still running get to store what they have (s).
SHUTDOWN_WAIT_SECS = 10.0
# Roles a provider understands; anything else in history is left out of the context.
CONTEXT_ROLES = frozenset({"user", "assistant", "system"})


class Assistant:
    def __init__(self, app: App, config: Mapping[str, Any]) -> None:
        self.app = app
        self.config = config
        self.provider: Provider = load_provider(config["provider"], ProviderSettings.from_config(config))
        #: How long a reply's claim lives without a refresh (AI_CLAIM_TTL): a node that died
        #: mid-reply holds its conversation this long at most.
        self.claim_ttl = float(config["claim_ttl"])
        self.usage = UsageBook(app, config)
        self.node_id = secrets.token_hex(6)
        self.slots = GenerationSlots(app, self.node_id)
        self.metrics: AiMetrics | None = None
        self.running: dict[str, Generation] = {}
        #: conversation id → slot token taken by ``refuse_or_reserve`` for a message being stored.
        self.reserved: dict[str, tuple[str, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.sweeper = Sweeper(self)

    @classmethod
    def of(cls, app: App) -> "Assistant":
        return app.plugin_state("ai").assistant

    @property
    def chat(self) -> Any:
        return self.app.service("chat")

    # -- before a reply -------------------------------------------------------------------

    async def refuse_or_reserve(self, conversation_id: str, actor: Any) -> str:
        """Check the quota, then take the conversation's slot: its token; ``QuotaExceeded``
        (429) or ``Conflict`` (409) before anything is stored."""
        await self.usage.check(actor.id, getattr(actor, "tier", "free"))
        token = await self._claim(conversation_id, PENDING_CLAIM_SECS)
        if token is None:
            raise Conflict("The assistant is already answering in this conversation; "
                           "wait for it or send stop-generation")
        self.reserved[conversation_id] = (token, time.monotonic() + PENDING_CLAIM_SECS)
        return token

    async def _claim(self, conversation_id: str, ttl: float) -> str | None:
        """Take the conversation's slot (None: taken). A reply a dead node left there is
        stored first, so the request that follows comes after it (``recovery``)."""
        claimed = await self.slots.claim(conversation_id, ttl)
        if claimed is None:
            return None
        token, orphan = claimed
        if orphan is not None:
            try:
                await store_orphan(self, conversation_id, orphan)
            except Exception:  # the request goes on; only the dead node's reply is lost
                log.exception("storing an interrupted reply failed", extra={"conversationId": conversation_id})
        return token

    def _take_reservation(self, conversation_id: str) -> str | None:
        token, expires = self.reserved.pop(conversation_id, (None, 0.0))
        if token is not None and expires >= time.monotonic() and self.slots.holds(conversation_id, token):
            return token
        return None

    # -- a reply --------------------------------------------------------------------------

    async def start(self, conversation: dict[str, Any], *, parent_id: str, user_id: str,
                    token: str | None = None, message_id: str | None = None) -> Generation | None:
        """Start a reply to ``parent_id`` in a task. ``token`` is a slot already taken;
        without one the slot is taken here (None when another reply holds it)."""
        conversation_id = conversation["id"]
        token = token or self._take_reservation(conversation_id)
        if token is None:
            token = await self._claim(conversation_id, self.claim_ttl)
            if token is None:
                log.warning("a reply was requested while another runs; not started",
                            extra={"conversationId": conversation_id})
                return None
        await self.slots.extend(conversation_id, token, self.claim_ttl)
        generation = Generation(self, conversation=conversation, parent_id=parent_id, user_id=user_id,
                                message_id=message_id or new_id(), token=token)
        self.running[conversation_id] = generation
        generation.task = asyncio.ensure_future(self._run(generation))
        self._tasks.add(generation.task)
        generation.task.add_done_callback(self._tasks.discard)
        if self.closing:  # started while the server stops: store it as such at once
            await generation.stop("shutdown")
        return generation

    async def _run(self, generation: Generation) -> None:
        try:
            await generation.run()
        except Exception:
            log.exception("AI reply failed unexpectedly", extra={"conversationId": generation.conversation_id})

    def forget(self, generation: Generation) -> None:
        if self.running.get(generation.conversation_id) is generation:
            del self.running[generation.conversation_id]

    async def context(self, conversation: dict[str, Any], leaf_id: str) -> list[ChatMessage]:
        """The system prompt, then the most recent messages of the branch ending at
        ``leaf_id`` that fit ``AI_CONTEXT_TOKENS``; then ``ai_before_request`` edits it."""
        metadata = conversation.get("metadata") or {}
        prompt = metadata.get("systemPrompt")
        if not isinstance(prompt, str) or not prompt.strip():
            prompt = self.config["system_prompt"]
        budget = max(1, int(self.config["context_tokens"]) - estimate_tokens(prompt))
        history = await self.chat.history(conversation["id"], budget, leaf_id=leaf_id,
                                          cost=lambda message: estimate_tokens(message["content"]))
        messages: list[ChatMessage] = [{"role": "system", "content": prompt}] if prompt else []
        for message in history:
            if message["role"] in CONTEXT_ROLES and message["type"] != "error" and message["content"]:
                messages.append({"role": message["role"], "content": message["content"]})
        if self.app.hooks.implemented("ai_before_request"):
            await self.app.hooks.call("ai_before_request", conversation=conversation, messages=messages)
        return messages

    # -- stopping -------------------------------------------------------------------------

    async def stop(self, conversation_id: str) -> bool:
        """``stop-generation``: stop the reply in this conversation, wherever it runs."""
        generation = self.running.get(conversation_id)
        if generation is not None:
            await generation.stop("cancelled")
            return True
        if await self.slots.running_elsewhere(conversation_id):
            await self.app.hub.send_control(STOP_CONTROL, {"conversationId": conversation_id})
            return True
        return False

    def on_stop_control(self, message: dict[str, Any]) -> None:
        generation = self.running.get(str(message.get("conversationId")))
        if generation is not None:
            task = asyncio.ensure_future(generation.stop("cancelled"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def status(self, conversation_id: str) -> dict[str, Any] | None:
        """The reply being generated in the conversation, for a join: ``{messageId, text, index}``."""
        generation = self.running.get(conversation_id)
        if generation is not None:
            return generation.status()
        return await self.slots.remote_status(conversation_id)

    async def shutdown(self) -> None:
        """Stop every reply still running, store what each had (finishReason ``shutdown``)."""
        self.closing = True
        await self.sweeper.stop()
        running = list(self.running.values())
        for generation in running:
            await generation.stop("shutdown")
        # Every task of ours, also replies already stored but still announcing their end:
        # Redis and the database close after this returns.
        tasks = list(self._tasks)
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_SECS)
            for task in pending:
                log.warning("an AI reply did not finish storing before shutdown")
                task.cancel()
        await self.provider.aclose()

    async def forget_user(self, user_id: str) -> None:
        """A user is being deleted: stop their replies on this node (so none records usage
        afterwards), then delete their usage rows."""
        theirs = [g for g in self.running.values() if g.user_id == user_id]
        for generation in theirs:
            await generation.stop("cancelled")
        tasks = [g.task for g in theirs if g.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_SECS)
        await self.usage.forget_user(user_id)

    # -- figures --------------------------------------------------------------------------

    def count_reply(self, finish_reason: str, usage: Usage | None, first_token: float | None, latency: float) -> None:
        if self.metrics is None:
            return
        labels = (self.provider.name, self.provider.model)
        self.metrics.generations.labels(*labels, finish_reason).inc()
        if usage is not None:
            self.metrics.tokens.labels(*labels, "prompt").inc(usage.prompt_tokens)
            self.metrics.tokens.labels(*labels, "completion").inc(usage.completion_tokens)
        if first_token is not None:
            self.metrics.first_token.labels(*labels).observe(first_token)
        self.metrics.latency.labels(*labels).observe(latency)

    def count_error(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(self.provider.name, self.provider.model, kind).inc()
