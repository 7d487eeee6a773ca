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
import gc
import os
import runpy
import sys
import threading
import time
import traceback
from typing import Any

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
    running: list[Any] = [None, 0.0, None]  # the callback running, since when (wall), a stack taken in it

    def timed_run(handle: asyncio.events.Handle) -> None:
        started = time.thread_time()
        running[:] = [handle, time.monotonic(), None]
        try:
            original(handle)
        finally:
            held = time.thread_time() - started
            stack, running[:] = running[2], [None, 0.0, None]
            if held >= threshold:
                print(f"Callback held the loop's CPU {held:.6f} seconds: {describe(handle)}"[:2000]
                      + (f" | stack {threshold * 1000:.0f} ms in: {stack}" if stack else ""), file=sys.stderr, flush=True)

    loop_thread = threading.get_ident()

    def watch() -> None:
        """Take the loop thread's stack once in each callback that runs past the threshold:
        the line it was on says what held the loop (the handle only says which task)."""
        while True:
            time.sleep(threshold / 4)
            handle, since, stack = running
            if handle is not None and stack is None and time.monotonic() - since >= threshold:
                frame = sys._current_frames().get(loop_thread)
                if frame is not None and running[0] is handle:
                    running[2] = " < ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
                                            for f in reversed(traceback.extract_stack(frame)[-12:]))

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
    threading.Thread(target=watch, name="loop-check-watch", daemon=True).start()


def report_gc_pauses() -> None:
    """Print each garbage collection that took half the threshold or more of its thread's CPU (a collection runs
    inside whichever callback allocated, so it explains a slow one whose code is cheap)."""
    started: list[float] = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.thread_time()
            return
        took = time.thread_time() - started[0]
        if took >= SLOW_CALLBACK_SECONDS / 2:
            print(f"GC of generation {info.get('generation')} took {took:.3f} seconds "
                  f"({info.get('collected')} collected) on {threading.current_thread().name}", file=sys.stderr, flush=True)

    gc.callbacks.append(on_gc)


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
    report_gc_pauses()
    script = os.path.abspath(sys.argv[1])
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(script)  # as if the script had been run directly
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
