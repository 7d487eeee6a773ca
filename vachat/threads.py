"""Threads that run blocking calls for the IOLoop and answer its futures directly.

``loop.run_in_executor`` with a ``ThreadPoolExecutor`` costs every call a
``concurrent.futures.Future`` (with its ``Condition``), an asyncio future chained to it and
the callbacks that copy one into the other. On the hot paths, where every request or send
batch makes a database call, that bookkeeping cost about as much as the call's own Python
work. ``ThreadPool`` keeps one queue and a fixed set of threads; a worker runs the call and
sets the result on the caller's asyncio future through ``call_soon_threadsafe``.

An idle thread is handed the next call in last-in, first-out order: the thread that finished
last takes it. Each database thread holds its own connection, and a SQLite connection keeps
its page cache only while no other connection writes. Waiters on one queue take calls in
turn, more or less: one client's sends moved to another connection about one time in ten
(394 switches in 4,000 sends; 5 in 4,600 now), and such a transaction reads its pages again
(offline, one-message transactions going round three connections ≈ 490 µs of CPU each, on one
≈ 340-440). Taken last-in first-out, a steady trickle of calls stays on one thread and its
warm cache; a burst still spreads over as many threads as it needs.

This module must never run a call on the IOLoop, nor lose one: a call is run exactly once
unless its caller was cancelled before a thread took it, and its outcome (result or
exception) reaches the caller, or is dropped only when the caller's loop is gone.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import logging
import os
import platform
import struct
import threading
from typing import Any, Callable, TypeVar

__all__ = ["ThreadPool"]

log = logging.getLogger("vachat.threads")

T = TypeVar("T")

# Sent once to each thread by ``shutdown``: the thread runs ``on_exit`` and ends.
_STOP = object()


class ThreadPool:
    """Up to ``size`` threads named ``name-N``, taking calls in order, the thread that went
    idle last first (see the module docstring).

    A thread is started only when a call finds none idle (as ``ThreadPoolExecutor`` does):
    each database thread opens a connection of its own, and a pool sized for the busiest
    moment should not hold that many connections while one would do. ``on_exit`` runs on
    each thread as it stops (the database closes the connection each thread holds).

    ``niceness`` above 0 lowers the threads' CPU priority (Linux: per thread; elsewhere
    nothing): CPU-bound calls that let go of the GIL (bcrypt) then take what the IOLoop's
    thread leaves of a busy core, rather than an equal share of it.

    ``slice_ns`` asks Linux's scheduler for a time slice that short for each thread (EEVDF,
    Linux 6.12 and later; older kernels ignore it): a thread the kernel woke on the same core
    (the IOLoop, with a WebSocket frame to answer) then preempts a running one within that
    slice, where it waited up to a default slice (1.4 ms here) for a busy hashing thread.
    The thread keeps its nice value and its share of the CPU.

    ``batch`` runs the threads under Linux's ``SCHED_BATCH`` (elsewhere nothing): same share
    of the CPU, but a thread woken with a call does not preempt the thread that woke it. The
    IOLoop hands a call over and goes on until it waits for events; preempted at the hand-over
    instead, it lost the core to a thread that could not run yet (the IOLoop still holds the
    GIL), and each call cost about six context switches instead of two."""

    def __init__(self, size: int, name: str, on_exit: Callable[[], None] | None = None, niceness: int = 0,
                 slice_ns: int | None = None, batch: bool = False) -> None:
        if size < 1:
            raise ValueError("a thread pool needs at least one thread")
        self.size = size
        self.name = name
        self.on_exit = on_exit
        self.niceness = niceness
        self.slice_ns = slice_ns
        self.batch = batch
        self._lock = threading.Lock()  # guards the three below
        self._pending: collections.deque[Any] = collections.deque()  # calls no thread has taken yet
        # Idle threads' slots, the one that went idle last on top. Invariant: a call is pending
        # only while no thread is idle.
        self._idle: list[_Slot] = []
        self._threads: list[threading.Thread] = []
        self._stopped = False

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` on one of the threads; its result, or its exception raised here."""
        return await self.start(call)

    def start(self, call: Callable[[], T]) -> asyncio.Future[T]:
        """Hand ``call()`` to the threads now: the future (of the running loop) its result or
        exception is set on. Cancelling that future before a thread takes the call skips it.
        For callers that settle several waiters from one call without a task of their own."""
        if self._stopped:
            raise RuntimeError(f"thread pool {self.name} is shut down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._hand((call, loop, future), start_thread=True)
        return future

    def _hand(self, item: Any, start_thread: bool) -> None:
        """Give ``item`` to the thread that went idle last, or queue it (and, with
        ``start_thread``, start one more thread if the pool may grow)."""
        with self._lock:
            if self._idle:
                slot = self._idle.pop()
                slot.item = item
                slot.wake.release()
                return
            self._pending.append(item)
            if start_thread and len(self._threads) < self.size and not self._stopped:
                thread = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _next(self, slot: "_Slot") -> Any:
        """The oldest pending call, or None with ``slot`` put on top of the idle ones."""
        with self._lock:
            if self._pending:
                return self._pending.popleft()
            self._idle.append(slot)
            return None

    def _work(self) -> None:
        if self.niceness > 0:
            _lower_priority(self.niceness)
        if self.slice_ns:
            _ask_for_slice(self.slice_ns)
        if self.batch:
            _no_wakeup_preemption()
        slot = _Slot()
        item = self._next(slot)
        while True:
            if item is None:
                slot.wake.acquire()
                item, slot.item = slot.item, None
            if item is _STOP:
                break
            call, loop, future = item
            if future.cancelled():  # its caller went away before the call started
                item = self._next(slot)
                continue
            try:
                settle, value = _succeed, call()
            except BaseException as error:  # handed to the caller, whatever it is
                settle, value = _fail, error
            # Idle (or on to the next pending call) before the caller hears back: a caller that
            # calls again at once hands it to this thread instead of starting another.
            item = self._next(slot)
            _answer(loop, future, settle, value)
        if self.on_exit is not None:
            try:
                self.on_exit()
            except Exception:
                log.debug("thread pool %s: on_exit failed", self.name, exc_info=True)

    def shutdown(self, timeout: float = 5.0, wait: bool = True) -> None:
        """Stop every thread once the calls queued before now have run; with ``wait``, wait up
        to ``timeout`` seconds for each (a call still running past it keeps its thread, which
        is a daemon: it does not hold the process). Calls made after this are refused."""
        with self._lock:
            self._stopped = True
            threads = list(self._threads)
        for _ in threads:  # after the calls already queued; an idle thread gets it at once
            self._hand(_STOP, start_thread=False)
        if not wait:
            return
        for thread in threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("thread %s still busy %.0f s after shutdown", thread.name, timeout)


class _Slot:
    """Where an idle thread waits for the call handed to it."""

    __slots__ = ("wake", "item")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()  # released once per item handed over
        self.item: Any = None


def _lower_priority(niceness: int) -> None:
    """Raise this thread's nice value by ``niceness`` (on Linux ``setpriority`` with a thread id
    sets that thread only; raising needs no privilege). Where it cannot, the thread runs at
    the process's priority, as it would have anyway."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
    except (AttributeError, OSError) as error:
        log.debug("thread pool: could not lower a thread's priority: %s", error)


# sched_setattr(2), which Python's os module lacks, by machine (elsewhere: not asked).
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}.get(platform.machine())
# struct sched_attr up to sched_period (SCHED_ATTR_SIZE_VER0): size, policy, flags, nice,
# priority, runtime (a fair thread's slice, in ns, since Linux 6.12), deadline, period.
_SCHED_ATTR = struct.Struct("=IIQiIQQQ")


def _ask_for_slice(slice_ns: int) -> None:
    """Give this thread a custom time slice (``SCHED_OTHER``, its nice value kept). Needs no
    privilege; where it cannot, the thread keeps the default slice, as it would have anyway."""
    if _SCHED_SETATTR is None:
        return
    try:
        tid = threading.get_native_id()
        attr = ctypes.create_string_buffer(_SCHED_ATTR.pack(_SCHED_ATTR.size, os.SCHED_OTHER, 0,
                                                            os.getpriority(os.PRIO_PROCESS, tid), 0, slice_ns, 0, 0))
        if ctypes.CDLL(None, use_errno=True).syscall(_SCHED_SETATTR, tid, attr, 0) != 0:
            log.debug("thread pool: could not set a time slice: %s", os.strerror(ctypes.get_errno()))
    except (AttributeError, OSError) as error:
        log.debug("thread pool: could not set a time slice: %s", error)


def _no_wakeup_preemption() -> None:
    """Put this thread under ``SCHED_BATCH`` (Linux; needs no privilege, keeps its nice
    value and its share of the CPU). Where it cannot, the thread stays as it was."""
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError) as error:
        log.debug("thread pool: could not set SCHED_BATCH: %s", error)


def _answer(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any],
            settle: Callable[[asyncio.Future[Any], Any], None], value: Any) -> None:
    try:
        loop.call_soon_threadsafe(settle, future, value)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        log.debug("thread pool: a result arrived after its loop closed")


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.cancelled():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.cancelled():
        if isinstance(error, StopIteration):  # a future cannot carry it (it would end the awaiting coroutine)
            error = RuntimeError(f"a thread pool call raised StopIteration: {error!r}")
        future.set_exception(error)
