"""The Redis connection, and the circuit breaker that lets vachat live without it.

``make_redis`` builds the one ``redis.asyncio.Redis`` client a process shares (rate limits,
broker, caches). Its timeouts are short on purpose: Redis is an accelerator here, never a
dependency a request may wait on for long. ``RedisGuard`` remembers whether Redis answered
lately; callers ask it before each attempt and tell it how the attempt went, so a dead Redis
costs one quick failure per back-off window instead of a timeout on every request.

This module must never raise a Redis error into a request path of its own accord, never log
once per failed call (one warning going down, one info coming back), and never hold the IOLoop:
everything here is either a coroutine or O(1) bookkeeping. It is not thread-safe; use it on the
IOLoop thread only.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any, Awaitable, Callable, TypeVar

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

__all__ = ["make_redis", "RedisGuard", "REDIS_ERRORS"]

log = logging.getLogger("vachat.redis")

# Errors that mean "Redis cannot serve this now" and must degrade, never become a 500.
# RedisError covers connection loss, timeouts, pool exhaustion and server-side refusals such as
# READONLY after a fail-over or OOM; OSError covers socket failures that escape redis-py
# (on 3.11 it also covers asyncio.TimeoutError, which is the builtin TimeoutError).
T = TypeVar("T")

REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)

# Loopback or same-datacentre Redis answers in well under a millisecond; a connect that takes
# longer than this means it is down, and the request should move on to the fallback.
REDIS_CONNECT_TIMEOUT_SECS = 1.5
# A command slower than this is treated as a failure: no rate-limit check is worth stalling a
# request for two seconds.
REDIS_SOCKET_TIMEOUT_SECS = 2.0
# A pooled connection idle longer than this is PINGed before reuse, so a Redis restart is found
# on that PING rather than by failing a real command.
REDIS_HEALTH_CHECK_INTERVAL_SECS = 15
# One immediate retry on a fresh connection absorbs a socket that died while idle in the pool
# (Redis restart, proxy idle cut); more retries would only multiply the wait when Redis is down.
REDIS_RETRIES = 1
REDIS_RETRY_BACKOFF_BASE_SECS = 0.01
REDIS_RETRY_BACKOFF_CAP_SECS = 0.05
# Concurrent commands beyond this wait for a free connection instead of opening more sockets;
# one IOLoop cannot use more in parallel, and redis-py's non-blocking pool would fail instead.
REDIS_MAX_CONNECTIONS = 64
# How long a command waits for a pooled connection before counting as a Redis failure.
REDIS_POOL_TIMEOUT_SECS = REDIS_SOCKET_TIMEOUT_SECS
# Shown by CLIENT LIST, so an operator can tell vachat's connections from others'.
REDIS_CLIENT_NAME = "vachat"

# After a failure, Redis is skipped this long before one request probes it again: short enough
# that recovery is noticed within seconds, long enough that an outage adds no latency.
GUARD_BACKOFF_SECS = 2.0


def make_redis(url: str, *, client_name: str = REDIS_CLIENT_NAME) -> redis.asyncio.Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``) with fail-fast timeouts.

    Nothing connects until the first command. ``client_name`` labels every connection in
    ``CLIENT LIST`` (a node may add its id; tests use it to find their own connections).
    Responses are bytes (``decode_responses=False``): payloads are opaque and the broker relies
    on it. The caller owns the client and closes it with ``await client.aclose()`` at shutdown,
    after closing the broker and rate limiter (they never close it, and a broker still running
    would reconnect through it).
    """
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=REDIS_POOL_TIMEOUT_SECS,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECS,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECS,
        socket_keepalive=True,
        health_check_interval=REDIS_HEALTH_CHECK_INTERVAL_SECS,
        retry=Retry(ExponentialBackoff(cap=REDIS_RETRY_BACKOFF_CAP_SECS,
                                       base=REDIS_RETRY_BACKOFF_BASE_SECS), REDIS_RETRIES),
        client_name=client_name,
        decode_responses=False,
    )
    # from_pool hands the pool to the client, so aclose() on the client disconnects it too.
    return redis.asyncio.Redis.from_pool(pool)


class RedisGuard:
    """A circuit breaker shared by everything that talks to one Redis.

    Around every Redis call, ``attempt`` does the whole dance::

        return await guard.attempt("rate limiter", lambda: client.something(), fallback)

    While Redis is up every call goes through. After a failure the guard is down: calls are
    skipped for ``backoff`` seconds, then one caller is let through as a probe (the others keep
    using the fallback); its success closes the circuit, its failure restarts the back-off.
    """

    def __init__(self, backoff: float = GUARD_BACKOFF_SECS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff = backoff
        self._clock = clock  # injectable so tests move time instead of sleeping
        self._available = True
        self._last_error: str | None = None
        self._retry_at = 0.0
        self._down_since: float | None = None

    @property
    def available(self) -> bool:
        """Whether the last attempt (by anyone) reached Redis."""
        return self._available

    @property
    def last_error(self) -> str | None:
        """What the failure that took Redis down was; None while it is up."""
        return self._last_error

    def should_try(self) -> bool:
        """True when the caller should use Redis now rather than its fallback."""
        if self._available:
            return True
        now = self._clock()
        if now < self._retry_at:
            return False
        # Grant one probe per window: a burst of requests right after the window must not all
        # pay for a connect timeout if Redis is still gone.
        self._retry_at = now + self.backoff
        return True

    def record_failure(self, error: BaseException | str, source: str = "") -> None:
        """Note that a Redis call failed; logs once, on the transition to down."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        now = self._clock()
        self._retry_at = now + self.backoff
        self._last_error = message
        if self._available:
            self._available = False
            self._down_since = now
            log.warning(
                "Redis unavailable%s, degrading to local delivery and in-memory rate limits "
                "until it answers again: %s",
                f" ({source})" if source else "", message,
            )

    def record_success(self, source: str = "") -> None:
        """Note that a Redis call worked; logs once, on the transition back to up."""
        if self._available:
            return
        now = self._clock()
        down_for = now - (self._down_since if self._down_since is not None else now)
        self._available = True
        self._last_error = None
        self._down_since = None
        log.info("Redis reachable again%s after %.1f s", f" ({source})" if source else "", down_for)

    async def attempt(self, source: str, operation: Callable[[], Awaitable[T]],
                      fallback: Callable[[], Any]) -> T:
        """``await operation()`` while Redis is usable, else (or when it fails) ``fallback()``
        (awaited when it returns an awaitable). Failures and recoveries are recorded for
        ``/health`` and logged once per transition, naming ``source``."""
        if self.should_try():
            try:
                result = await operation()
            except REDIS_ERRORS as error:
                self.record_failure(error, source)
            else:
                self.record_success(source)
                return result
        answer = fallback()
        return await answer if inspect.isawaitable(answer) else answer

    def status(self) -> dict[str, Any]:
        """The ``redis`` check of ``/health``."""
        if self._available:
            return {"status": "ok", "error": None}
        return {"status": "down", "error": self._last_error}
