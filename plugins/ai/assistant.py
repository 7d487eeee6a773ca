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
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Mapping

from plugins.chat.api import CHAT, ChatService
from vachat.plugin_api import Actor, App, Conflict, new_id

from .generation import Generation
from .metrics import AiMetrics
from .progress import GenerationSlots
from .recovery import Sweeper, store_orphan
from .prompts import system_messages
from .providers import ChatMessage, Provider, ProviderSettings, ReplyOptions, Usage, estimate_tokens, load_provider
from .usage import Reservation, UsageBook

__all__ = ["Assistant", "STOP_CONTROL", "PENDING_CLAIM_SECS", "SHUTDOWN_WAIT_SECS"]

log = logging.getLogger("vachat.plugins.ai")

# The control message that asks the node generating in a conversation to stop.
STOP_CONTROL = "ai-stop"
# A reply's slot is taken when its message is accepted (before it is stored, so a second
# request is refused with 409 rather than stored); storing takes milliseconds. A message
# refused after that (another plugin's check) releases it at once (chat_message_refused);
# should that never come (the process stopped in between), the slot frees itself after this long.
PENDING_CLAIM_SECS = 5.0
# How long a request waits for the slot of a reply that is being stored on this node (s):
# storing takes milliseconds, but the slot is given back after the broadcast and its hooks.
ENDING_WAIT_SECS = 2.0
# At shutdown, how long the replies still running get to store what they have (s).
SHUTDOWN_WAIT_SECS = 10.0
# Roles a provider understands; anything else in history is left out of the context.
CONTEXT_ROLES = frozenset({"user", "assistant", "system"})


@dataclass(frozen=True)
class _Pending:
    """What ``refuse_or_reserve`` took for a message being stored: the slot and the tokens."""

    token: str
    expires: float
    reservation: Reservation
    #: The message it was taken for (chat's ``draftId``), to give it back if that one is refused.
    draft_id: str | None = None


def _tokens(messages: list[ChatMessage]) -> int:
    return sum(estimate_tokens(m["content"]) for m in messages)


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
        #: conversation id → set once the reply being stored there has given its slot back.
        self.ending: dict[str, asyncio.Event] = {}
        #: conversation id → what ``refuse_or_reserve`` took for a message being stored.
        self.reserved: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.sweeper = Sweeper(self)

    @classmethod
    def of(cls, app: App) -> "Assistant":
        assistant: Assistant = app.plugin_state("ai").assistant
        return assistant

    @property
    def model(self) -> str:
        return self.provider.model

    @property
    def chat(self) -> ChatService:
        return self.app.service(CHAT)

    # -- before a reply -------------------------------------------------------------------

    async def refuse_or_reserve(self, conversation: dict[str, Any], actor: Actor, *, leaf_id: str | None = None,
                                new_content: str = "", draft_id: str | None = None) -> str:
        """Reserve the reply's tokens of the caller's quota, then take the conversation's slot:
        its token; ``QuotaExceeded`` (429) or ``Conflict`` (409) before anything is stored.
        The reply will answer ``leaf_id`` (default: the current message), or ``new_content``
        about to be stored after it. ``draft_id`` names the message it is reserved for
        (``release_reservation`` gives it all back if that message is refused)."""
        conversation_id = conversation["id"]
        prompt_tokens = await self.estimate_prompt(conversation, leaf_id, new_content)
        reservation = await self.usage.reserve(actor.id, getattr(actor, "tier", "free"), prompt_tokens)
        token = await self._claim(conversation_id, PENDING_CLAIM_SECS)
        ending = self.ending.get(conversation_id)
        if token is None and ending is not None:
            # The reply there is already stored (its new-message may be what prompted this
            # request): its slot is a few awaits from free, so wait for it rather than refuse.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ending.wait(), ENDING_WAIT_SECS)
            token = await self._claim(conversation_id, PENDING_CLAIM_SECS)
        if token is None:
            await self.usage.settle(reservation, None)
            raise Conflict("The assistant is already answering in this conversation; "
                           "wait for it or send stop-generation")
        self.reserved[conversation_id] = _Pending(token, time.monotonic() + PENDING_CLAIM_SECS, reservation, draft_id)
        # The message may still be refused after this check (another plugin's): then no reply
        # starts, and the tokens go back once the slot would have freed itself.
        asyncio.get_running_loop().call_later(PENDING_CLAIM_SECS, self._expire_pending, conversation_id, token)
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

    def _take_pending(self, conversation_id: str, token: str | None = None) -> _Pending | None:
        pending = self.reserved.get(conversation_id)
        if pending is None or (token is not None and pending.token != token):
            return None
        del self.reserved[conversation_id]
        return pending

    def _expire_pending(self, conversation_id: str, token: str) -> None:
        pending = self._take_pending(conversation_id, token)
        if pending is not None:
            self._spawn(self.usage.settle(pending.reservation, None))

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def release_reservation(self, conversation_id: str, draft_id: str) -> None:
        """The message ``draft_id`` was refused after its slot and tokens were taken: give them
        back now (only that message's: another one may hold the conversation's slot)."""
        pending = self.reserved.get(conversation_id)
        if pending is None or pending.draft_id != draft_id:
            return
        del self.reserved[conversation_id]
        await self.slots.release(conversation_id, pending.token)
        await self.usage.settle(pending.reservation, None)

    # -- a reply --------------------------------------------------------------------------

    async def start(self, conversation: dict[str, Any], *, parent_id: str, user_id: str,
                    token: str | None = None, message_id: str | None = None,
                    options: ReplyOptions | None = None) -> Generation | None:
        """Start a reply to ``parent_id`` in a task, with the slot and the tokens
        ``refuse_or_reserve`` took (``token``, when the caller holds it). Without them the slot
        is taken here (None when another reply holds it) and the reply runs unreserved."""
        conversation_id = conversation["id"]
        pending = self._take_pending(conversation_id, token)
        reservation = pending.reservation if pending is not None else Reservation.unlimited(user_id)
        if token is None and pending is not None and pending.expires >= time.monotonic() \
                and self.slots.holds(conversation_id, pending.token):
            token = pending.token
        if token is None:
            token = await self._claim(conversation_id, self.claim_ttl)
            if token is None:
                log.warning("a reply was requested while another runs; not started",
                            extra={"conversationId": conversation_id})
                await self.usage.settle(reservation, None)
                return None
        await self.slots.extend(conversation_id, token, self.claim_ttl)
        generation = Generation(self, conversation=conversation, parent_id=parent_id, user_id=user_id,
                                message_id=message_id or new_id(), token=token, reservation=reservation,
                                options=options)
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

    async def context(self, conversation: dict[str, Any], leaf_id: str | None) -> list[ChatMessage]:
        """The system messages (the operator's prompt, then the conversation's own), then the
        most recent messages of the branch ending at ``leaf_id`` that fit what
        ``AI_CONTEXT_TOKENS`` leaves; then ``ai_before_request`` edits it."""
        messages = system_messages(self.config, conversation)
        messages += await self._history(conversation, leaf_id, _tokens(messages))
        if self.app.hooks.implemented("ai_before_request"):
            await self.app.hooks.call("ai_before_request", conversation=conversation, messages=messages)
        return messages

    async def estimate_prompt(self, conversation: dict[str, Any], leaf_id: str | None, new_content: str = "") -> int:
        """The tokens of the context a reply to ``leaf_id`` (or to ``new_content``, stored
        after it) will send, as ``context`` builds it, before any ``ai_before_request``."""
        system = _tokens(system_messages(self.config, conversation))
        newest = estimate_tokens(new_content) if new_content else 0
        return system + newest + _tokens(await self._history(conversation, leaf_id, system + newest))

    async def _history(self, conversation: dict[str, Any], leaf_id: str | None, spent: int) -> list[ChatMessage]:
        budget = max(1, int(self.config["context_tokens"]) - spent)
        history = await self.chat.history(conversation["id"], budget, leaf_id=leaf_id,
                                          cost=lambda message: estimate_tokens(message["content"]))
        return [{"role": m["role"], "content": m["content"]} for m in history
                if m["role"] in CONTEXT_ROLES and m["type"] != "error" and m["content"]]

    # -- stopping -------------------------------------------------------------------------

    async def stop(self, conversation_id: str) -> bool:
        """``stop-generation``: stop the reply in this conversation, wherever it runs. False
        when nothing is being generated, a reply already being stored included (its text is
        final: a client that saw it stored and stops is told so, not that it stopped it)."""
        if conversation_id in self.ending:
            return False
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
        for conversation_id in list(self.reserved):  # accepted, never started: the tokens go back
            pending = self._take_pending(conversation_id)
            if pending is not None:
                self._spawn(self.usage.settle(pending.reservation, None))
        running = list(self.running.values())
        for generation in running:
            await generation.stop("shutdown")
        # Every task of ours, also replies already stored but still announcing their end:
        # Redis and the database close after this returns.
        tasks = list(self._tasks)
        if tasks:
            done, unfinished = await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_SECS)
            for task in unfinished:
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
