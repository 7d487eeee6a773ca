"""Rate limiting: one interface, an in-process backend and a Redis backend with one algorithm.

Both backends implement GCRA (the generic cell rate algorithm, a token bucket kept as one
timestamp per key). For ``Rate(count, period)``:

- a fresh key may make ``count`` hits at once (the burst), and never more than ``count`` at once;
- after that, one more hit is allowed every ``period / count`` seconds (the sustained rate);
- a refused hit is not counted, so a client that keeps retrying gets through at the sustained
  rate rather than being locked out for ever;
- ``retry_after`` is exact: the seconds until the next hit would be allowed.

Unlike a fixed window, there is no window edge at which two bursts can land back to back, so a
client can never get ``2 * count`` through in an instant. One key is one bucket: use a key per
(purpose, subject), e.g. ``"auth:ip:203.0.113.9"``, and always the same ``Rate`` with it.

``RedisRateLimiter`` runs the same arithmetic atomically in a Lua script using Redis's clock, so
every node shares one bucket per key. When Redis fails it degrades to an in-process limiter
(each node then enforces the limit on its own) and goes back to Redis once it answers.

The in-process table is bounded (``MEMORY_MAX_KEYS``). Keys under ``PROTECTED_KEY_PREFIXES``
(the ``auth:`` buckets of sign-in, registration and password recovery) are never forgotten while
live: forgetting one would hand an attacker a fresh set of password guesses. When the table is
full, the least recently hit unprotected key (a per-IP ``global:`` bucket, whose loss gives back
at most one burst of the global rate) makes room; when only live protected keys remain, a new
key is refused (``allowed=False``, so the caller answers 429) until one of them expires.

This module must never raise a Redis error to its caller, never let a request wait on a dead
Redis for more than the client's short timeouts, never grow its memory without bound, never
forget a live protected key, and never block the IOLoop: the in-process work per hit is O(1)
amortised.
"""

from __future__ import annotations

import abc
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .config import Rate
from .redis_client import RedisGuard

if TYPE_CHECKING:
    import redis.asyncio

__all__ = [
    "RateDecision", "RateLimiter", "MemoryRateLimiter", "RedisRateLimiter", "make_rate_limiter",
    "REDIS_KEY_PREFIX", "PROTECTED_KEY_PREFIXES",
]

log = logging.getLogger("vachat.ratelimit")

# Every rate-limit key in Redis starts with this, so they are easy to find, and to flush
# without touching the broker's channels or any cache.
REDIS_KEY_PREFIX = "vachat:rl:"
# The in-process backend holds at most this many keys. It is the memory bound against a flood
# of distinct keys (spoofed IPs, random account names): ~100 bytes per key, so about 10 MB at
# the cap, far more keys than one node sees in a rate-limit period.
MEMORY_MAX_KEYS = 100_000
# Keys examined per hit for expiry. Each hit adds at most one key, so removing up to this many
# keeps the table from growing with dead keys while bounding the work any single hit does.
MEMORY_SWEEP_BATCH = 32
# Protected keys examined before a new key is refused on a full table: expired ones may hide
# behind live ones, and a refusal should not be for want of looking. Bounded, so a flood of new
# keys against a table full of live ones costs each refusal a few hundred microseconds at most.
MEMORY_FULL_SWEEP_BATCH = 1024
# Buckets that protect authentication: never forgotten while live (see the module docstring).
PROTECTED_KEY_PREFIXES = ("auth:",)

_MICROS = 1_000_000

# KEYS[1] = bucket key; ARGV[1] = emission interval (µs); ARGV[2] = period (µs).
# Returns {allowed (0|1), remaining, retry_after (µs)}. Integer microseconds throughout, because
# Redis truncates Lua numbers to integers on the way out and doubles are exact up to 2^53.
# Must stay the same arithmetic as _gcra() below.
_GCRA_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if now < allow_at then
  return {0, 0, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((period - (new_tat - now)) / interval), 0}
"""

# KEYS[1] = bucket key; ARGV[1] = emission interval (µs). Gives back one hit (see refund()).
# Must stay the same arithmetic as MemoryRateLimiter.refund_now().
_REFUND_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat then return 0 end
local new_tat = tat - interval
if new_tat <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
end
return 1
"""


@dataclass(frozen=True)
class RateDecision:
    """The answer to one hit."""

    allowed: bool
    limit: int  # the Rate's count, for X-RateLimit-Limit
    remaining: int  # hits still allowed right now, for X-RateLimit-Remaining
    retry_after: float  # seconds until a hit would be allowed (0 when this one was)


class RateLimiter(abc.ABC):
    """Counts events per key against a ``Rate``; see the module docstring for the semantics."""

    @abc.abstractmethod
    async def hit(self, key: str, rate: Rate) -> RateDecision:
        """Count one event under ``key`` if ``rate`` allows it, and say whether it did."""

    @abc.abstractmethod
    async def reset(self, key: str) -> None:
        """Forget ``key``'s history, e.g. after a successful sign-in."""

    @abc.abstractmethod
    async def refund(self, key: str, rate: Rate) -> None:
        """Give back one hit counted under ``key`` with ``rate`` (a no-op for an empty bucket).

        For limits that count only failures: hit before the attempt (so concurrent attempts
        cannot all slip through) and refund the ones that turn out to succeed.
        """

    async def close(self) -> None:
        """Release what the limiter holds. It does not close a shared Redis client."""


def _units(rate: Rate) -> tuple[int, int]:
    """The rate as (emission interval, period) in integer microseconds."""
    period = max(1, round(rate.period * _MICROS))
    # Rounding the interval down keeps count * interval <= period, so a full burst of `count`
    # is always allowed; the sustained rate is off by under a microsecond per hit.
    return max(1, period // rate.count), period


def _gcra(tat: int | None, now: int, rate: Rate) -> tuple[RateDecision, int | None]:
    """One GCRA step: the decision, and the new theoretical arrival time to store (None = keep)."""
    interval, period = _units(rate)
    tat = now if tat is None or tat < now else tat
    new_tat = tat + interval
    allow_at = new_tat - period
    if now < allow_at:
        return RateDecision(False, rate.count, 0, (allow_at - now) / _MICROS), None
    remaining = (period - (new_tat - now)) // interval
    return RateDecision(True, rate.count, remaining, 0.0), new_tat


class MemoryRateLimiter(RateLimiter):
    """GCRA in this process: the embedded default, and the fallback while Redis is down.

    Unprotected keys live in an OrderedDict kept in order of last update: each hit drops up to
    ``MEMORY_SWEEP_BATCH`` expired keys from its old end, so such a key is gone at most one
    (longest) period after its last hit, and on a full table the least recently hit one makes
    room. Protected keys (``protected_prefixes``) live in a second table that is never evicted
    from; it is swept round-robin (a live key examined is moved to the back), because a locked
    account's bucket stays live far longer than the keys updated after it.
    """

    def __init__(self, max_keys: int = MEMORY_MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic,
                 protected_prefixes: tuple[str, ...] = PROTECTED_KEY_PREFIXES) -> None:
        self.max_keys = max_keys
        self.protected_prefixes = protected_prefixes
        self._clock = clock  # injectable so tests move time instead of sleeping
        self._tats: OrderedDict[str, int] = OrderedDict()
        self._protected: OrderedDict[str, int] = OrderedDict()
        self._warned_full = False

    def __len__(self) -> int:
        """Keys currently tracked (expired ones may linger until swept)."""
        return len(self._tats) + len(self._protected)

    def _now(self) -> int:
        return int(self._clock() * _MICROS)

    async def hit(self, key: str, rate: Rate) -> RateDecision:
        return self.hit_now(key, rate)

    def hit_now(self, key: str, rate: Rate) -> RateDecision:
        """``hit`` without the coroutine, for callers outside async code."""
        now = self._now()
        table = self._table_of(key)
        self._sweep(now, protected=table is self._protected)
        tat = table.get(key)
        if tat is None and len(self) >= self.max_keys and not self._make_room(now):
            return self._refuse_new_key(now, rate)
        decision, new_tat = _gcra(tat, now, rate)
        if new_tat is not None:
            table[key] = new_tat
            table.move_to_end(key)
        return decision

    async def reset(self, key: str) -> None:
        self._tats.pop(key, None)
        self._protected.pop(key, None)

    async def refund(self, key: str, rate: Rate) -> None:
        self.refund_now(key, rate)

    def refund_now(self, key: str, rate: Rate) -> None:
        """``refund`` without the coroutine."""
        table = self._table_of(key)
        tat = table.get(key)
        if tat is None:
            return
        interval, _ = _units(rate)
        if tat - interval <= self._now():
            del table[key]  # back to a full bucket: the same as no key
        else:
            table[key] = tat - interval

    def _table_of(self, key: str) -> "OrderedDict[str, int]":
        return self._protected if key.startswith(self.protected_prefixes) else self._tats

    async def close(self) -> None:
        self._tats.clear()
        self._protected.clear()

    def _sweep(self, now: int, *, protected: bool) -> None:
        # A key whose arrival time has passed is indistinguishable from an absent one. In the
        # LRU table, stop at the first live key: behind it lie only keys updated later, most of
        # them live too. The protected table is not ordered by expiry, so sweeping it means
        # rotating live keys: only hits of protected keys (the only ones that add to it) do,
        # rather than every request paying 32 rotations while sign-in buckets are live.
        tats = self._tats
        for _ in range(MEMORY_SWEEP_BATCH):
            if not tats:
                break
            key, tat = next(iter(tats.items()))
            if tat > now:
                break
            del tats[key]
        if protected:
            self._sweep_protected(now, MEMORY_SWEEP_BATCH)

    def _sweep_protected(self, now: int, batch: int) -> None:
        protected = self._protected
        for _ in range(min(batch, len(protected))):
            key, tat = next(iter(protected.items()))
            if tat > now:
                protected.move_to_end(key)
            else:
                del protected[key]

    def _make_room(self, now: int) -> bool:
        """Free one slot for a new key: the least recently hit unprotected key goes, else an
        expired protected one. False when every key left is a live protected one."""
        self._warn_full()
        if self._tats:
            self._tats.popitem(last=False)
            return True
        self._sweep_protected(now, MEMORY_FULL_SWEEP_BATCH)
        return len(self) < self.max_keys

    def _refuse_new_key(self, now: int, rate: Rate) -> RateDecision:
        # The soonest a slot can free up: when the oldest-updated protected key expires (an
        # estimate; the sweep finds whichever expires first).
        oldest = next(iter(self._protected.values()), now)
        retry_after = max(oldest - now, _units(rate)[0]) / _MICROS
        return RateDecision(False, rate.count, 0, retry_after)

    def _warn_full(self) -> None:
        if not self._warned_full:
            self._warned_full = True
            log.warning(
                "in-memory rate limiter reached %d keys; forgetting the least recently used "
                "unprotected keys and refusing new ones when only live sign-in buckets remain "
                "(a flood of distinct keys?)", self.max_keys,
            )


class RedisRateLimiter(RateLimiter):
    """GCRA in Redis, shared by every node; falls back to memory while Redis is unavailable.

    Counts made in memory during an outage are not copied to Redis when it returns: for a
    few seconds around an outage a client may get up to one extra burst per node.
    """

    def __init__(self, client: "redis.asyncio.Redis", guard: RedisGuard, *,
                 prefix: str = REDIS_KEY_PREFIX,
                 fallback: MemoryRateLimiter | None = None) -> None:
        self._redis = client
        self._guard = guard
        self._prefix = prefix
        self._fallback = fallback or MemoryRateLimiter()
        # EVALSHA with a transparent SCRIPT LOAD on NOSCRIPT (e.g. after a Redis restart).
        self._script = client.register_script(_GCRA_LUA)
        self._refund_script = client.register_script(_REFUND_LUA)

    async def hit(self, key: str, rate: Rate) -> RateDecision:
        interval, period = _units(rate)

        async def in_redis() -> RateDecision:
            allowed, remaining, retry_us = await self._script(keys=[self._prefix + key], args=[interval, period])
            return RateDecision(bool(allowed), rate.count, int(remaining), int(retry_us) / _MICROS)

        return await self._guard.attempt("rate limiter", in_redis, lambda: self._fallback.hit_now(key, rate))

    async def reset(self, key: str) -> None:
        await self._fallback.reset(key)
        await self._guard.attempt("rate limiter", lambda: self._redis.delete(self._prefix + key), lambda: None)

    async def refund(self, key: str, rate: Rate) -> None:
        interval, _ = _units(rate)
        await self._guard.attempt("rate limiter", lambda: self._refund_script(keys=[self._prefix + key], args=[interval]),
                                  lambda: self._fallback.refund_now(key, rate))

    async def close(self) -> None:
        await self._fallback.close()


def make_rate_limiter(redis: "redis.asyncio.Redis | None",
                      guard: RedisGuard | None) -> RateLimiter:
    """The limiter for this process: Redis-backed when a client is given, else in-memory."""
    if redis is None:
        return MemoryRateLimiter()
    return RedisRateLimiter(redis, guard or RedisGuard())
