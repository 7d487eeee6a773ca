"""Run a Python server script with asyncio's debug mode and a 10 ms slow-callback threshold.

    python bench/loop_check.py run.py serve      # what `--loop-check` makes of a server's command

Every event loop the script creates (``asyncio.run``, Tornado's ``IOLoop``) is in debug mode
with ``slow_callback_duration`` at ``BENCH_SLOW_CALLBACK_MS`` (10 ms unless set): asyncio then
logs ``Executing <handle> took X seconds`` (logger ``asyncio``, WARNING) for every callback
that held the loop that long. bench/harness.py captures the server's output and counts those
lines. The script runs in this process (``runpy``), so the process the harness pins and
accounts is the server itself. Each callback's CPU time on the loop's thread is measured too
(``report_cpu_held``), which other load on a shared machine does not inflate. Debug mode also records a traceback for every callback
scheduled, which slows the server down: figures from such a run are not reported.
"""
from __future__ import annotations

import asyncio
import os
import runpy
import sys
import time

SLOW_CALLBACK_SECONDS = float(os.environ.get("BENCH_SLOW_CALLBACK_MS", "10")) / 1000
# BENCH_LOOP_DEBUG=0: no debug mode, only the CPU timing (cheap: the durations are the real ones).
DEBUG = os.environ.get("BENCH_LOOP_DEBUG", "1") != "0"


def report_cpu_held() -> None:
    """Also time each callback's CPU on the loop's thread (``time.thread_time``): asyncio's
    figure is wall time, which on a shared core includes other processes' (and our own worker
    threads') time slices. A callback that held the thread's CPU past the threshold is work
    done on the loop, whatever else ran on the machine; it is written to stderr as
    ``Callback held the loop's CPU X seconds: <handle>``."""
    original = asyncio.events.Handle._run
    threshold = SLOW_CALLBACK_SECONDS

    def timed_run(handle: asyncio.events.Handle) -> None:
        started = time.thread_time()
        try:
            original(handle)
        finally:
            held = time.thread_time() - started
            if held >= threshold:
                print(f"Callback held the loop's CPU {held:.3f} seconds: {describe(handle)}"[:2000],
                      file=sys.stderr, flush=True)

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]


def describe(handle: asyncio.events.Handle) -> str:
    """A task's step as the coroutine it ran, innermost awaited one first, and where each now
    waits (a handle's own repr names only the future that woke the task); any other callback
    as its repr."""
    task = getattr(handle._callback, "__self__", None)
    if not isinstance(task, asyncio.Task):
        return repr(handle)
    chain, coro = [], task.get_coro()
    while coro is not None and hasattr(coro, "cr_frame"):
        frame = coro.cr_frame
        where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}" if frame is not None else "done"
        chain.append(f"{coro.__qualname__} ({where})")
        coro = getattr(coro, "cr_await", None)
    return "task step: " + " <- ".join(reversed(chain))


class DebugLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """Every new loop in debug mode, with the slow-callback threshold above."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
        return loop


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    if DEBUG:
        asyncio.set_event_loop_policy(DebugLoopPolicy())
    report_cpu_held()
    script = os.path.abspath(sys.argv[1])
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(script)  # as if the script had been run directly
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
