"""Live WebSocket connections across every node, for the dashboard.

With Redis, each node writes its own count under ``vachat:admin:sockets:<node>`` with a short
TTL, every ``PUBLISH_INTERVAL_SECONDS`` and on each dashboard view; the dashboard adds up the
keys that exist. A node that dies stops refreshing its key and drops out of the sum within
``KEY_TTL_SECONDS``. Without Redis (or while it is unreachable) there is one node to count:
this one (``app.hub.connection_count``).

This module must never fail a dashboard request because Redis is away (``app.with_redis``
falls back), and never leave its background task running after shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from vachat.plugin_api import App, stop_task

__all__ = ["SocketCounter", "socket_counter", "KEY_PREFIX"]

log = logging.getLogger("vachat.plugins.admin.sockets")

KEY_PREFIX = "vachat:admin:sockets:"
# How often a node refreshes its count (s): another node's figure is at most this old. One
# small SET per node every two seconds costs Redis nothing; a human's view needs no better.
PUBLISH_INTERVAL_SECONDS = 2.0
# Three missed refreshes and a node is taken for gone (s).
KEY_TTL_SECONDS = 6
# SCAN batch size: nodes are few, one round trip finds them all.
SCAN_COUNT = 100
REDIS_SOURCE = "admin sockets"


class SocketCounter:
    """One per application (kept in ``app.plugin_state("admin")``)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.node_key = KEY_PREFIX + secrets.token_hex(8)
        self._task: asyncio.Task[None] | None = None

    async def publish(self) -> None:
        """Write this node's count (with Redis; a no-op without)."""
        count = self.app.hub.connection_count

        async def write(redis: Any) -> None:
            await redis.set(self.node_key, count, ex=KEY_TTL_SECONDS)

        await self.app.with_redis(REDIS_SOURCE, write, lambda: None)

    async def live(self) -> int:
        """Authenticated sockets open on every node."""
        await self.publish()  # this node's figure is exact, not up to an interval old

        async def total(redis: Any) -> int:
            keys = [key async for key in redis.scan_iter(match=KEY_PREFIX + "*", count=SCAN_COUNT)]
            values = await redis.mget(keys) if keys else []
            return sum(int(value) for value in values if value is not None)

        return await self.app.with_redis(REDIS_SOURCE, total, lambda: self.app.hub.connection_count)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.publish()
            except Exception:  # never let the loop die: the next round may work
                log.exception("publishing the socket count failed")
            await asyncio.sleep(PUBLISH_INTERVAL_SECONDS)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

        async def remove(redis: Any) -> None:
            await redis.delete(self.node_key)

        await self.app.with_redis(REDIS_SOURCE, remove, lambda: None)


def socket_counter(app: App) -> SocketCounter:
    """The application's counter, made on first use."""
    state = app.plugin_state("admin")
    counter = getattr(state, "socket_counter", None)
    if counter is None:
        counter = state.socket_counter = SocketCounter(app)
    return counter
