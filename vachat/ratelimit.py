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
(each node then enforces the limit on its own) and goes back to Redis once it answers (SPEC §9).

This module must never raise a Redis error to its caller, never let a request wait on a dead
Redis for more than the client's short timeouts, never grow its memory without bound, and never
block the IOLoop: the in-process work per hit is O(1) amortised.
"""

from __future__ import annotations

import abc
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .config import Rate
from .redis_client import REDIS_ERRORS, RedisGuard

if TYPE_CHECKING:
    import redis.asyncio

__all__ = [
    "RateDecision", "RateLimiter", "MemoryRateLimiter", "RedisRateLimiter", "make_rate_limiter",
    "REDIS_KEY_PREFIX",
]

log = logging.getLogger("vachat.ratelimit")

# Every rate-limit key in Redis starts with this, so they are easy to find, and to flush
# without touching the broker's channels or any cache.
REDIS_KEY_PREFIX = "vachat:rl:"
# The in-process backend forgets the least recently hit key beyond this many. It is the memory
# bound against a flood of distinct keys (spoofed IPs, random account names): ~100 bytes per
# key, so about 10 MB at the cap, far more keys than one node sees in a rate-limit period.
MEMORY_MAX_KEYS = 100_000
# Expired keys examined per hit. Each hit adds at most one key, so removing up to this many
# keeps the table from growing with dead keys while bounding the work any single hit does.
MEMORY_SWEEP_BATCH = 32

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

    Keys live in an OrderedDict kept in order of last update. Each hit drops up to
    ``MEMORY_SWEEP_BATCH`` expired keys from the old end, so a key is gone at most one (longest)
    period after its last hit; beyond ``max_keys`` the least recently hit key is forgotten.
    """

    def __init__(self, max_keys: int = MEMORY_MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self._clock = clock  # injectable so tests move time instead of sleeping
        self._tats: OrderedDict[str, int] = OrderedDict()
        self._warned_full = False

    def __len__(self) -> int:
        """Keys currently tracked (expired ones may linger until swept)."""
        return len(self._tats)

    def _now(self) -> int:
        return int(self._clock() * _MICROS)

    async def hit(self, key: str, rate: Rate) -> RateDecision:
        return self.hit_now(key, rate)

    def hit_now(self, key: str, rate: Rate) -> RateDecision:
        """``hit`` without the coroutine, for callers outside async code."""
        now = self._now()
        self._sweep(now)
        decision, new_tat = _gcra(self._tats.get(key), now, rate)
        if new_tat is not None:
            self._tats[key] = new_tat
            self._tats.move_to_end(key)
            if len(self._tats) > self.max_keys:
                self._evict()
        return decision

    async def reset(self, key: str) -> None:
        self._tats.pop(key, None)

    async def refund(self, key: str, rate: Rate) -> None:
        self.refund_now(key, rate)

    def refund_now(self, key: str, rate: Rate) -> None:
        """``refund`` without the coroutine."""
        tat = self._tats.get(key)
        if tat is None:
            return
        interval, _ = _units(rate)
        if tat - interval <= self._now():
            del self._tats[key]  # back to a full bucket: the same as no key
        else:
            self._tats[key] = tat - interval

    async def close(self) -> None:
        self._tats.clear()

    def _sweep(self, now: int) -> None:
        # A key whose arrival time has passed is indistinguishable from an absent one. Stop at
        # the first live key: behind it lie only keys updated later, most of them live too.
        for _ in range(MEMORY_SWEEP_BATCH):
            if not self._tats:
                return
            key, tat = next(iter(self._tats.items()))
            if tat > now:
                return
            del self._tats[key]

    def _evict(self) -> None:
        while len(self._tats) > self.max_keys:
            self._tats.popitem(last=False)
        if not self._warned_full:
            self._warned_full = True
            log.warning(
                "in-memory rate limiter reached %d keys; forgetting the least recently used "
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
        if self._guard.should_try():
            interval, period = _units(rate)
            try:
                allowed, remaining, retry_us = await self._script(
                    keys=[self._prefix + key], args=[interval, period]
                )
            except REDIS_ERRORS as error:
                self._guard.record_failure(error, "rate limiter")
            else:
                self._guard.record_success("rate limiter")
                return RateDecision(bool(allowed), rate.count, int(remaining),
                                    int(retry_us) / _MICROS)
        return self._fallback.hit_now(key, rate)

    async def reset(self, key: str) -> None:
        await self._fallback.reset(key)
        if not self._guard.should_try():
            return
        try:
            await self._redis.delete(self._prefix + key)
        except REDIS_ERRORS as error:
            self._guard.record_failure(error, "rate limiter")
        else:
            self._guard.record_success("rate limiter")

    async def refund(self, key: str, rate: Rate) -> None:
        if self._guard.should_try():
            interval, _ = _units(rate)
            try:
                await self._refund_script(keys=[self._prefix + key], args=[interval])
            except REDIS_ERRORS as error:
                self._guard.record_failure(error, "rate limiter")
            else:
                self._guard.record_success("rate limiter")
                return
        self._fallback.refund_now(key, rate)

    async def close(self) -> None:
        await self._fallback.close()


def make_rate_limiter(redis: "redis.asyncio.Redis | None",
                      guard: RedisGuard | None) -> RateLimiter:
    """The limiter for this process: Redis-backed when a client is given, else in-memory."""
    if redis is None:
        return MemoryRateLimiter()
    return RedisRateLimiter(redis, guard or RedisGuard())
