"""The hot-path cache of credentials: session id or API-key hash → who it authenticates.

Every authenticated request needs "is this session (key) still valid, whose is it, what may
they do". Asking the database each time would make auth the most expensive part of a cheap
read, so the answer is cached — and because revocation must take effect on the very next
request, on every node, the cache is built so that invalidation is synchronous:

- With Redis (``app.redis``), the cache lives **only** in Redis (``vachat:auth:<key>``),
  shared by every node; there is no per-node memory layer in front of it. Revoking deletes
  the key, and the revoking request awaits that delete before it answers, so the next request
  on any node misses and reads the revoked row from the database. (A broker control message
  would reach other nodes a little later: a request landing there in between would still
  pass. A per-node memory layer would need such messages. Neither is needed here.)
  Revocation writes a short-lived tombstone rather than deleting, and lookups only fill an
  absent key (``SET NX``), so a lookup racing the revocation cannot put the live answer back.
- Without Redis there is one node (the in-process broker connects nothing else), so a
  bounded in-memory LRU with the same TTL is exact.

Entries expire after ``CACHE_TTL_SECONDS``, which bounds what no one invalidates explicitly
(an edited role's permissions when the editor forgot ``invalidate_role``) and the one case
that cannot be invalidated: a delete that failed because Redis was unreachable. Such deletes
are retried, before anything else, the next time this node reaches Redis; while Redis is
down every lookup goes to the database (the guard skips Redis), so nothing stale is read
on this node meanwhile.

Unknown API keys are the one negative answer kept, and only briefly: ``UnknownKeys`` remembers
the hashes the database did not know (or knew as revoked, expired or of a disabled user) for
``UNKNOWN_KEY_TTL_SECONDS``, in this process's memory, bounded, so a client retrying a dead key
in a loop costs one query per TTL rather than one per attempt. Keys are random, so a hash never
seen before cannot belong to a key created since; the only answer the TTL can delay is a
disabled user's key working again after re-enabling.

This module must never raise a Redis error into a request, never cache a negative answer
other than a revocation's tombstone and a dead API key's hash (``UnknownKeys``), and never hold
a password, token or key: keys are session ids and SHA-256 hashes of API keys.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Any

from ..redis_client import REDIS_ERRORS, RedisGuard

__all__ = [
    "AuthCache", "auth_cache", "CACHE_TTL_SECONDS", "REDIS_PREFIX", "TOMBSTONE", "UnknownKeys", "unknown_api_keys",
]

log = logging.getLogger("vachat.accounts.cache")

# How long a positive answer may be served without the database (s). Short: it bounds how
# long an un-invalidated role edit or a delete lost to a Redis outage can linger; long enough
# that a busy client costs one database read per half minute, not one per request.
CACHE_TTL_SECONDS = 30
# Memory backend bound (entries): ~300 bytes each, so at most ~15 MB; far more live sessions
# than one node serves within a TTL.
MEMORY_MAX_ENTRIES = 50_000
REDIS_PREFIX = "vachat:auth:"
# Failed Redis deletes remembered for retry, at most; beyond this the oldest are dropped
# (they expire on their own within CACHE_TTL_SECONDS anyway).
MAX_PENDING_DELETES = 10_000
#: What a revoked credential's entry holds (see ``tombstone``).
TOMBSTONE: dict[str, Any] = {"revoked": True}
# How long an unknown API key's hash is answered "unknown" without the database (s), and how
# many are remembered (~100 bytes each, so ~1 MB at most; the oldest go first).
UNKNOWN_KEY_TTL_SECONDS = 30
UNKNOWN_KEY_MAX_ENTRIES = 10_000


class AuthCache:
    """``get``/``set``/``delete`` of JSON-able dicts, in Redis when configured, else memory."""

    def __init__(self, redis: Any = None, guard: RedisGuard | None = None, ttl: float = CACHE_TTL_SECONDS) -> None:
        self.redis = redis
        self.guard = guard or RedisGuard()
        self.ttl = ttl
        self._memory: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._pending_deletes: OrderedDict[str, None] = OrderedDict()

    # -- Redis plumbing ----------------------------------------------------------------

    def _failed(self, error: BaseException) -> None:
        self.guard.record_failure(error, "auth cache")

    async def _flush_pending(self) -> None:
        if self._pending_deletes:
            keys = list(self._pending_deletes)
            await self.redis.delete(*(REDIS_PREFIX + key for key in keys))
            for key in keys:
                self._pending_deletes.pop(key, None)

    # -- the interface -----------------------------------------------------------------

    async def get(self, key: str) -> dict[str, Any] | None:
        if self.redis is None:
            return self._memory_get(key)

        async def read() -> bytes | None:
            await self._flush_pending()
            return await self.redis.get(REDIS_PREFIX + key)

        raw = await self.guard.attempt("auth cache", read, lambda: None)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    async def set(self, key: str, value: dict[str, Any]) -> None:
        """Cache ``value`` unless ``key`` is already there. Only-if-absent matters for
        tombstones: a lookup that read a session just before it was revoked must not put the
        stale answer back after the revocation wrote its tombstone."""
        if self.redis is None:
            if self._memory_get(key) is None:
                self._memory_put(key, value)
            return

        async def write() -> None:
            await self._flush_pending()
            await self.redis.set(REDIS_PREFIX + key, json.dumps(value, separators=(",", ":")),
                                 ex=max(1, int(self.ttl)), nx=True)

        await self.guard.attempt("auth cache", write, lambda: None)

    async def delete(self, *keys: str) -> None:
        """Forget ``keys`` everywhere, now (for changes a later lookup should see)."""
        await self._overwrite(keys, None)

    async def tombstone(self, *keys: str) -> None:
        """Mark ``keys`` revoked everywhere, now: lookups get ``TOMBSTONE`` until the entry
        expires (by then the database says the same). For irreversible revocations."""
        await self._overwrite(keys, TOMBSTONE)

    async def _overwrite(self, keys: tuple[str, ...], value: dict[str, Any] | None) -> None:
        if not keys:
            return
        if self.redis is None:
            for key in keys:
                if value is None:
                    self._memory.pop(key, None)
                else:
                    self._memory_put(key, value)
            return
        try:
            # Tried even when the guard says Redis is down: a revocation is worth one quick
            # failure, and success here is what makes it take effect on the other nodes.
            if value is None:
                await self.redis.delete(*(REDIS_PREFIX + key for key in keys))
            else:
                encoded = json.dumps(value)
                async with self.redis.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.set(REDIS_PREFIX + key, encoded, ex=max(1, int(self.ttl)))
                    await pipe.execute()
        except REDIS_ERRORS as error:
            self._failed(error)
            for key in keys:
                self._pending_deletes[key] = None
            while len(self._pending_deletes) > MAX_PENDING_DELETES:
                self._pending_deletes.popitem(last=False)
        else:
            self.guard.record_success("auth cache")

    def _memory_get(self, key: str) -> dict[str, Any] | None:
        entry = self._memory.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._memory[key]
            return None
        self._memory.move_to_end(key)
        return entry[1]

    def _memory_put(self, key: str, value: dict[str, Any]) -> None:
        self._memory[key] = (time.monotonic() + self.ttl, value)
        self._memory.move_to_end(key)
        while len(self._memory) > MEMORY_MAX_ENTRIES:
            self._memory.popitem(last=False)

    def forget_matching(self, predicate: Any) -> None:
        """Memory backend: drop entries whose value matches (Redis entries expire instead,
        or are deleted by key)."""
        for key in [key for key, (_, value) in self._memory.items() if predicate(value)]:
            del self._memory[key]


def auth_cache(app: Any) -> AuthCache:
    """The application's cache, made on first use and kept in the accounts' plugin state."""
    state = app.plugin_state("accounts")
    cache = getattr(state, "auth_cache", None)
    if cache is None:
        cache = state.auth_cache = AuthCache(app.redis, app.redis_guard)
    return cache


class UnknownKeys:
    """Hashes of API keys the database did not accept, remembered for a short while (see the
    module docstring). A bounded LRU with a TTL, in this process's memory."""

    def __init__(self, ttl: float = UNKNOWN_KEY_TTL_SECONDS, max_entries: int = UNKNOWN_KEY_MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._until: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, key_hash: str) -> bool:
        until = self._until.get(key_hash)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._until[key_hash]
            return False
        return True

    def __len__(self) -> int:
        return len(self._until)

    def add(self, key_hash: str) -> None:
        self._until[key_hash] = time.monotonic() + self.ttl
        self._until.move_to_end(key_hash)
        while len(self._until) > self.max_entries:
            self._until.popitem(last=False)

    def discard(self, key_hash: str) -> None:
        self._until.pop(key_hash, None)


def unknown_api_keys(app: Any) -> UnknownKeys:
    """The application's memory of unknown API keys, made on first use."""
    unknown = getattr(app, "_accounts_unknown_api_keys", None)
    if unknown is None:
        unknown = app._accounts_unknown_api_keys = UnknownKeys()
    return unknown
