"""Group work on the database (``Batcher``): the group commit of sends, and the look before
the store filter."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Hashable

from vachat.plugin_api import App

__all__ = ["Batcher", "MAX_SEND_BATCH"]

# Most user messages stored in one transaction by the send batcher (see ``Batcher``): big
# enough to absorb a burst of concurrent senders, small enough that a batch holds the write
# lock for milliseconds, not seconds.
MAX_SEND_BATCH = 128


class Batcher:
    """Group work on the database: what callers submit while batches are being handled forms
    the next batch, handled by ``work`` in one database-thread call.

    ``work(items)`` answers, for each item in order, ``(True, result)`` or ``(False, the
    exception for that item's caller)``; if it raises, every item of the batch gets the error.
    At most ``in_flight`` batches are handled at a time, each of at most ``MAX_SEND_BATCH``
    items, and each caller hears back only once the batch that carries its item has been
    handled. Used for the group commit of sends (``store.insert_user_messages``: each send
    waits for the commit of the batch that carries it, so "acked means stored") and for the
    look before the store filter (``store.look_before_store``). One by one, every send paid a
    database-thread hop and a transaction of its own, and on SQLite the database threads
    queued on the one write lock (its busy handler sleeps between tries, so the wait far
    exceeded the work).

    More than one batch in flight (PostgreSQL): while one batch waits for its commit to reach
    the disk, the next one does its work. Items with the same ``key`` (a conversation) are
    never in two batches in flight at once: an item waits while an earlier batch holding its
    key is in flight, and the items of one key keep the order they were submitted in, so a
    conversation's messages are stored in the order they were sent even though a later batch
    could otherwise take the conversation's row lock first."""

    def __init__(self, app: App, work: Callable[[list[Any]], list[tuple[bool, Any]]], *, in_flight: int = 1,
                 key: Callable[[Any], Hashable] | None = None) -> None:
        if in_flight < 1:
            raise ValueError("a batcher needs at least one batch in flight")
        self.app = app
        self.work = work
        self.in_flight = in_flight
        self.key = key
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._running = 0
        self._busy: dict[Hashable, int] = {}  # key -> batches in flight that hold it

    async def submit(self, item: Any) -> Any:
        """``item``'s result, once its batch has been handled."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._start()
        return await future

    def _start(self) -> None:
        """Start batches from what is pending while fewer than ``in_flight`` are running."""
        while self._pending and self._running < self.in_flight:
            batch, keys = self._next_batch()
            if not batch:  # every pending item waits for a key held by a batch in flight
                return
            self._running += 1
            for key in keys:
                self._busy[key] = self._busy.get(key, 0) + 1
            self._launch(batch, keys)

    def _next_batch(self) -> tuple[list[tuple[Any, asyncio.Future[Any]]], set[Hashable]]:
        """The oldest pending items whose keys no batch in flight holds, up to
        ``MAX_SEND_BATCH``; the rest stay pending, in order."""
        if self.key is None or not self._busy:
            batch, self._pending = self._pending[:MAX_SEND_BATCH], self._pending[MAX_SEND_BATCH:]
            return batch, ({self.key(item) for item, _ in batch} if self.key is not None else set())
        batch, rest, keys = [], [], set()
        held = set(self._busy)
        for entry in self._pending:
            key = self.key(entry[0])
            if len(batch) < MAX_SEND_BATCH and key not in held:
                batch.append(entry)
                keys.add(key)
            else:  # a key left behind once stays behind: its items keep their order
                rest.append(entry)
                held.add(key)
        self._pending = rest
        return batch, keys

    def _launch(self, batch: list[tuple[Any, asyncio.Future[Any]]], keys: set[Hashable]) -> None:
        """Hand ``batch`` to a database thread at once; a callback on that call's future settles
        it (``_settle``). No task per batch: for a lone client every send is a batch, and a
        task cost it its creation and a turn of the loop before the call was handed over."""
        loop = asyncio.get_running_loop()
        try:
            done = self.app.db.start(self.work, [item for item, _ in batch])
        except Exception as error:  # refused at once (shutting down): told on the next turn, as before
            loop.call_soon(self._settle, batch, keys, [(False, error)] * len(batch))
            return
        done.add_done_callback(lambda call: self._settle(batch, keys, _outcomes(call, len(batch))))

    def _settle(self, batch: list[tuple[Any, asyncio.Future[Any]]], keys: set[Hashable],
                outcomes: list[tuple[bool, Any]]) -> None:
        try:
            for (_, future), (ok, value) in zip(batch, outcomes):
                if not future.done():  # done: its caller went away (a send is stored all the same)
                    future.set_result(value) if ok else future.set_exception(value)
        finally:
            self._running -= 1
            for key in keys:
                self._busy[key] -= 1
                if not self._busy[key]:
                    del self._busy[key]
            self._start()


def _outcomes(call: asyncio.Future[list[tuple[bool, Any]]], size: int) -> list[tuple[bool, Any]]:
    """A batch's outcomes from its database call: ``work``'s answer, or, when the call failed
    (a send's transaction: none stored), its error for every item."""
    if call.cancelled():  # nobody cancels it; should it happen, the callers must still hear
        return [(False, asyncio.CancelledError())] * size
    error = call.exception()
    return [(False, error)] * size if error is not None else call.result()
