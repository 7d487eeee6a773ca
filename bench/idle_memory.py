"""What one idle authenticated vachat socket holds: a tracemalloc diff of the full server.

    .venv/bin/python bench/idle_memory.py                      # 2,000 sockets, top 25 lines
    .venv/bin/python bench/idle_memory.py --sockets 5000 --group traceback --top 10

The server of bench/idle_sockets.py (`run.py serve`, every plugin, SQLite, chat_stack's
settings) runs under tracemalloc; its tokens are minted the same way. The driver takes a
snapshot before the generator (bench/loadgen/idle.js) connects and another once every socket
is authenticated and idle, after a `gc.collect()`, and prints the allocations that grew,
in bytes per socket, by the line that allocated them (`--group lineno`) or by the innermost
`--depth` frames (`--group traceback`). tracemalloc counts Python's allocations only (not the
kernel's socket buffers, not the allocator's slack), so the total is below the RSS growth that
idle_sockets.py reports; it shows what each socket keeps and where it was made.
"""
from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import chat_stack
from bench.harness import REPO, ensure_loadgen, free_port, log, new_parser, raise_nofile, start_server, stop
from bench.idle_sockets import drive, vachat_tokens

# Runs in the server process: tracemalloc from the start, a snapshot (after a full
# collection) written to $IDLE_MEMORY_SNAPSHOT.<n> on each SIGUSR1.
SERVER_WRAPPER = """
import gc, os, runpy, signal, sys, tracemalloc
tracemalloc.start(int(os.environ["IDLE_MEMORY_DEPTH"]))
taken = [0]
def snapshot(signum, frame):
    gc.collect()
    path = f"{os.environ['IDLE_MEMORY_SNAPSHOT']}.{taken[0]}"
    taken[0] += 1
    tracemalloc.take_snapshot().dump(path + ".part")
    os.rename(path + ".part", path)
signal.signal(signal.SIGUSR1, snapshot)
sys.argv = ["run.py", "serve"]
runpy.run_path("run.py", run_name="__main__")
"""


def take(pid: int, path: Path, timeout: float = 120.0) -> tracemalloc.Snapshot:
    os.kill(pid, signal.SIGUSR1)
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise RuntimeError(f"the server wrote no snapshot {path} within {timeout:g}s")
        time.sleep(0.2)
    return tracemalloc.Snapshot.load(str(path))


def main() -> int:
    ap = new_parser("idle_memory", __doc__)
    ap.add_argument("--sockets", type=int, default=2000)
    ap.add_argument("--accounts", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--group", choices=("lineno", "traceback", "filename"), default="lineno")
    ap.add_argument("--depth", type=int, default=8, help="frames kept per allocation (traceback grouping)")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    args.settle, args.settle_before = 2.0, 0.0

    raise_nofile(args.sockets + 2048)
    node = ensure_loadgen()
    port = free_port()
    db = chat_stack.BenchDatabase("sqlite", f"idle-memory-{port}")
    workdir = Path(tempfile.mkdtemp(prefix="idle-memory-"))
    env = chat_stack.server_env(port, db.url)
    env.update(IDLE_MEMORY_SNAPSHOT=str(workdir / "snapshot"), IDLE_MEMORY_DEPTH=str(args.depth))
    server = start_server([sys.executable, "-c", SERVER_WRAPPER], env, port, cwd=REPO, ready_timeout=120)
    try:
        api = chat_stack.Api(port)
        tokens = vachat_tokens(api, args.sockets, args.accounts)
        snapshots: list[tracemalloc.Snapshot] = []
        take_next = lambda: snapshots.append(take(server.pid, workdir / f"snapshot.{len(snapshots)}"))
        result = drive(node, server.pid, f"ws://127.0.0.1:{port}/ws", tokens, args,
                       before_connecting=take_next, while_idle=take_next)
    finally:
        stop(server)
        db.drop()
    stats = snapshots[1].compare_to(snapshots[0], args.group)
    grown = [s for s in stats if s.size_diff > 0]
    total = sum(s.size_diff for s in stats)
    n = args.sockets
    print(f"\n{n:,} idle authenticated sockets: tracemalloc grew {total / 1024 / n:.2f} KiB per socket "
          f"(RSS grew {result['kib_per_socket']:.2f} KiB per socket, measured with tracemalloc on); "
          f"top {args.top} by {args.group}:")
    for stat in grown[:args.top]:
        frames = stat.traceback.format() if args.group == "traceback" else [str(stat.traceback[0])]
        where = frames[-1].strip() if args.group != "traceback" else "\n      ".join(f.strip() for f in frames)
        print(f"{stat.size_diff / n:9.1f} B/socket  {stat.count_diff / n:6.2f} blocks/socket  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
