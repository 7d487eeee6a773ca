"""Group work on the database (``Batcher``): the group commit of sends, and the look before
the store filter."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from vachat.plugin_api import App

__all__ = ["Batcher", "MAX_SEND_BATCH"]

# Most user messages stored in one transaction by the send batcher (see ``Batcher``): big
# enough to absorb a burst of concurrent senders, small enough that a batch holds the write
# lock for milliseconds, not seconds.
MAX_SEND_BATCH = 128


class Batcher:
    """Group work on the database: what callers submit while a batch is being handled forms
    the next batch, handled by ``work`` in one database-thread call.

    ``work(items)`` answers, for each item in order, ``(True, result)`` or ``(False, the
    exception for that item's caller)``; if it raises, every item of the batch gets the error.
    One batch is in flight at a time, at most ``MAX_SEND_BATCH`` items. Used for the group
    commit of sends (``store.insert_user_messages``: each send waits for the commit of the batch
    that carries it, so "acked means stored") and for the look before the store filter
    (``store.look_before_store``). One by one, every send paid a database-thread hop and a
    transaction of its own, and on SQLite the database threads queued on the one write lock
    (its busy handler sleeps between tries, so the wait far exceeded the work)."""

    def __init__(self, app: App, work: Callable[[list[Any]], list[tuple[bool, Any]]]) -> None:
        self.app = app
        self.work = work
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: Any) -> Any:
        """``item``'s result, once its batch has been handled."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_SEND_BATCH], self._pending[MAX_SEND_BATCH:]
                try:
                    outcomes = await self.app.db.run(self.work, [item for item, _ in batch])
                except Exception as error:  # the whole batch failed (a send's transaction: none stored)
                    outcomes = [(False, error)] * len(batch)
                for (_, future), (ok, value) in zip(batch, outcomes):
                    if not future.done():  # done: its caller went away (a send is stored all the same)
                        future.set_result(value) if ok else future.set_exception(value)
        finally:
            self._flusher = None
