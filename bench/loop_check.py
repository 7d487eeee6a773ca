"""Run a Python server script with asyncio's debug mode and a 10 ms slow-callback threshold.

    python bench/loop_check.py run.py serve      # what `--loop-check` makes of a server's command

Every event loop the script creates (``asyncio.run``, Tornado's ``IOLoop``) is in debug mode
with ``slow_callback_duration`` at ``BENCH_SLOW_CALLBACK_MS`` (10 ms unless set): asyncio then
logs ``Executing <handle> took X seconds`` (logger ``asyncio``, WARNING) for every callback
that held the loop that long. bench/harness.py captures the server's output and counts those
lines. The script runs in this process (``runpy``), so the process the harness pins and
accounts is the server itself. Debug mode also records a traceback for every callback
scheduled, which slows the server down: figures from such a run are not reported.
"""
from __future__ import annotations

import asyncio
import os
import runpy
import sys

SLOW_CALLBACK_SECONDS = float(os.environ.get("BENCH_SLOW_CALLBACK_MS", "10")) / 1000


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
    asyncio.set_event_loop_policy(DebugLoopPolicy())
    script = os.path.abspath(sys.argv[1])
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(script)  # as if the script had been run directly
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
