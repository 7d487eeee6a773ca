"""Who is generating where: one claim per conversation, and the progress of its reply.

One generation at a time per conversation, on every node: the claim is a Redis key set with
NX and a TTL (``claim_ttl``) that the generating node refreshes, so a node that dies frees its
conversations when the TTL runs out. Without Redis (or while it is down) claims are kept on
this node only, which is all there is.

While a reply streams, the generating node writes its progress (``messageId``, the index of
the last ``ai-delta``, the text so far) to Redis *before* publishing each delta, so a socket
joining on another node reads a state that covers every delta published before its read,
and the deltas after it reach it live (chat's join drops held deltas up to that index): no
gap, no repeat.

The same record is what survives a node that dies mid-reply (``recovery``): it also names the
message the reply answers and who asked, lives ``PROGRESS_RETAIN_SECS`` longer than the claim,
and the conversation is listed in the ``running`` set until the reply is released. A record
whose claim has expired is an orphan; ``take_orphan`` hands it to exactly one node.

This module must never keep a claim it does not hold (release checks the token) and never
raise a Redis failure to a generation (``app.with_redis`` falls back).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from vachat.plugin_api import App

__all__ = ["GenerationSlots"]

KEY_PREFIX = "vachat:ai:"
# The conversations with a reply running (or orphaned), for the sweepers of ``recovery``.
RUNNING_KEY = f"{KEY_PREFIX}running"
# A reply's progress outlives its claim by this long (s): time enough for a sweeper (every few
# seconds) or the next request in the conversation to find the orphan of a dead node and store
# it; past it, an orphan nobody found is forgotten rather than kept forever.
PROGRESS_RETAIN_SECS = 3600.0
# Deletes the claim and its progress only if the claim is still ours (it may have expired and
# been taken by another node meanwhile).
RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('srem', KEYS[4], ARGV[2])
    return redis.call('del', KEYS[1], KEYS[2], KEYS[3])
end
return 0
"""
# Takes an orphan's progress ``{meta, text}`` (and forgets it) if the claim is gone or is the
# caller's own (ARGV[2]: a new claim taken over an orphan); else nothing. One script, so two
# nodes finding the same orphan cannot both take it.
TAKE_ORPHAN_SCRIPT = """
local claim = redis.call('get', KEYS[1])
if claim and claim ~= ARGV[2] then
    return false
end
local meta = redis.call('get', KEYS[2])
local text = redis.call('get', KEYS[3])
redis.call('del', KEYS[2], KEYS[3])
redis.call('srem', KEYS[4], ARGV[1])
if not meta then
    return false
end
return {meta, text or ''}
"""


def _keys(conversation_id: str) -> tuple[str, str, str]:
    return (f"{KEY_PREFIX}claim:{conversation_id}", f"{KEY_PREFIX}meta:{conversation_id}",
            f"{KEY_PREFIX}text:{conversation_id}")


class GenerationSlots:
    def __init__(self, app: App, node_id: str) -> None:
        self.app = app
        self.node_id = node_id
        #: conversation id → (token, monotonic expiry) of the claims this node holds.
        self.local: dict[str, tuple[str, float]] = {}

    def _held_locally(self, conversation_id: str) -> bool:
        held = self.local.get(conversation_id)
        if held is None:
            return False
        if held[1] < time.monotonic():
            del self.local[conversation_id]
            return False
        return True

    async def claim(self, conversation_id: str, ttl: float) -> tuple[str, dict[str, Any] | None] | None:
        """Take the conversation's slot for ``ttl`` seconds: ``(token, orphan)``, ``orphan``
        being the progress a dead node left (``take_orphan``: the caller stores it), or None
        when the slot is taken."""
        if self._held_locally(conversation_id):
            return None
        token = f"{self.node_id}:{secrets.token_hex(8)}"
        claim_key = _keys(conversation_id)[0]
        orphan: dict[str, Any] | None = None

        async def take(redis: Any) -> bool:
            nonlocal orphan
            if not await redis.set(claim_key, token, nx=True, px=int(ttl * 1000)):
                return False
            orphan = await self._take(redis, conversation_id, token)
            return True

        if not await self.app.with_redis("ai", take, lambda: True):
            return None
        self.local[conversation_id] = (token, time.monotonic() + ttl)
        return token, orphan

    async def take_orphan(self, conversation_id: str) -> dict[str, Any] | None:
        """The progress of a reply whose node died (its claim expired): ``{messageId, index,
        parentId, userId, text}``, handed to one caller only; None when there is none."""
        return await self.app.with_redis("ai", lambda redis: self._take(redis, conversation_id, ""), lambda: None)

    async def orphan_candidates(self) -> list[str]:
        """The conversations listed as running a reply, on any node."""

        async def read(redis: Any) -> list[str]:
            return [member.decode() for member in await redis.smembers(RUNNING_KEY)]

        return await self.app.with_redis("ai", read, list)

    @staticmethod
    async def _take(redis: Any, conversation_id: str, token: str) -> dict[str, Any] | None:
        claim_key, meta_key, text_key = _keys(conversation_id)
        taken = await redis.eval(TAKE_ORPHAN_SCRIPT, 4, claim_key, meta_key, text_key, RUNNING_KEY,
                                 conversation_id, token)
        if not taken:
            return None
        meta, text = taken
        return {**json.loads(meta), "text": text.decode("utf-8") if isinstance(text, bytes) else text}

    def holds(self, conversation_id: str, token: str) -> bool:
        return self._held_locally(conversation_id) and self.local[conversation_id][0] == token

    async def extend(self, conversation_id: str, token: str, ttl: float) -> None:
        """Keep the claim (and its progress) alive for another ``ttl`` seconds."""
        if not self.holds(conversation_id, token):
            return
        self.local[conversation_id] = (token, time.monotonic() + ttl)
        claim_key, meta_key, text_key = _keys(conversation_id)

        async def extend(redis: Any) -> None:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.pexpire(claim_key, int(ttl * 1000))
                for key in (meta_key, text_key):
                    pipe.pexpire(key, int((ttl + PROGRESS_RETAIN_SECS) * 1000))
                await pipe.execute()

        await self.app.with_redis("ai", extend, lambda: None)

    async def advance(self, conversation_id: str, message_id: str, delta: str, index: int, ttl: float, *,
                      parent_id: str, user_id: str) -> None:
        """Record that delta ``index`` (``delta``, possibly empty at the start) is about to be
        published. Awaited before the publication."""
        claim_key, meta_key, text_key = _keys(conversation_id)
        meta = json.dumps({"messageId": message_id, "index": index, "parentId": parent_id, "userId": user_id})
        expiry = int(ttl * 1000)
        kept = int((ttl + PROGRESS_RETAIN_SECS) * 1000)

        async def write(redis: Any) -> None:
            async with redis.pipeline(transaction=True) as pipe:
                if delta:
                    pipe.append(text_key, delta)
                pipe.set(meta_key, meta, px=kept)
                pipe.pexpire(text_key, kept)
                pipe.pexpire(claim_key, expiry)
                if index < 0:
                    pipe.sadd(RUNNING_KEY, conversation_id)
                await pipe.execute()

        await self.app.with_redis("ai", write, lambda: None)

    async def release(self, conversation_id: str, token: str) -> None:
        if self.local.get(conversation_id, ("",))[0] == token:
            del self.local[conversation_id]
        keys = _keys(conversation_id)

        async def release(redis: Any) -> None:
            await redis.eval(RELEASE_SCRIPT, 4, *keys, RUNNING_KEY, token, conversation_id)

        await self.app.with_redis("ai", release, lambda: None)

    async def remote_status(self, conversation_id: str) -> dict[str, Any] | None:
        """The generation running on any node, as a join reports it, or None."""
        keys = _keys(conversation_id)

        async def read(redis: Any) -> dict[str, Any] | None:
            claim, meta, text = await redis.mget(*keys)
            if claim is None or meta is None:
                return None
            progress = json.loads(meta)
            return {"messageId": progress["messageId"], "text": (text or b"").decode("utf-8"),
                    "index": progress["index"]}

        return await self.app.with_redis("ai", read, lambda: None)

    async def running_elsewhere(self, conversation_id: str) -> bool:
        """Whether another node holds the conversation's slot."""
        claim_key = _keys(conversation_id)[0]

        async def read(redis: Any) -> bool:
            claim = await redis.get(claim_key)
            return claim is not None and not claim.decode().startswith(f"{self.node_id}:")

        return await self.app.with_redis("ai", read, lambda: False)
