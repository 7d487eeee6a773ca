"""Bounded waits on tasks: ``stop_task``, ``finish_within`` and ``awaiting_chain``.

``task.cancel(); await task`` waits forever for a task that swallows its cancellation, and
one can without meaning to: redis-py answers a cancellation that lands as one of its own
read timeouts expires as that timeout (the read reports "no message", or the command fails
with a timeout that a retry loop then retries), and a background loop goes round again. At
shutdown that is a node that never exits; in a test, a task still running when its loop
closes, finalized later half-way through a command. ``stop_task`` cancels again while the
task runs, for a bounded time, and says where a task that would not stop was waiting.
``finish_within`` is the same bound for work that should finish on its own (a shutdown step).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable

__all__ = ["stop_task", "finish_within", "awaiting_chain", "STOP_TASK_TIMEOUT_SECS"]

log = logging.getLogger("vachat.tasks")

# How long stop_task waits for a task by default (s): a background loop's cancellation
# unwinds in microseconds; this is for a step that must finish (a connection's teardown).
STOP_TASK_TIMEOUT_SECS = 5.0
# How often stop_task cancels again a task still running after a cancellation (s).
CANCEL_AGAIN_SECS = 0.05


async def stop_task(task: "asyncio.Future[Any] | None", timeout: float = STOP_TASK_TIMEOUT_SECS) -> bool:
    """Cancel ``task`` and wait up to ``timeout`` seconds for it to end, cancelling it again
    while it runs on. True once it has ended; False (logged, with where it waits) if it did
    not. Its result or exception is not raised: it was being stopped."""
    if task is None:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("a task did not stop when cancelled", extra={"task": repr(task)[:200],
                                                                     "awaiting": awaiting_chain(task)})
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(remaining, CANCEL_AGAIN_SECS))
    if not task.cancelled():
        task.exception()  # retrieved: a failure on the way out is not "never retrieved" noise
    return True


async def finish_within(awaitable: Awaitable[Any], timeout: float, what: str) -> bool:
    """Await ``awaitable`` for at most ``timeout`` seconds. True once it has finished (its
    exception is raised here, a ``TimeoutError`` of its own included); False if it did not
    finish in time, or was cancelled by someone else: logged as ``what``, with where it
    waited, and it is cancelled."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        log.warning("%s did not finish in time; going on", what,
                    extra={"timeoutSeconds": timeout, "awaiting": awaiting_chain(task)})
        task.cancel()
        return False
    if task.cancelled():
        log.warning("%s was cancelled", what)
        return False
    task.result()
    return True


def awaiting_chain(task: "asyncio.Future[Any]") -> list[str]:
    """Where a pending task waits: each coroutine it awaits, outermost first, as ``file:line
    function`` (``Task.get_stack`` gives only the outermost frame of a suspended one)."""
    chain = []
    awaited = task.get_coro() if isinstance(task, asyncio.Task) else None
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return chain
