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

import sys
import tracemalloc
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import new_parser
from bench.idle_sockets import add_reading_args, read_around_idle_sockets

# Runs in the server process: tracemalloc from the start, a snapshot (after a full
# collection) written to $READING.<n> on each SIGUSR1.
SERVER_WRAPPER = """
import gc, os, runpy, signal, sys, tracemalloc
tracemalloc.start(int(os.environ["IDLE_MEMORY_DEPTH"]))
taken = [0]
def snapshot(signum, frame):
    gc.collect()
    path = f"{os.environ['READING']}.{taken[0]}"
    taken[0] += 1
    tracemalloc.take_snapshot().dump(path + ".part")
    os.rename(path + ".part", path)
signal.signal(signal.SIGUSR1, snapshot)
sys.argv = ["run.py", "serve"]
runpy.run_path("run.py", run_name="__main__")
"""


def main() -> int:
    ap = new_parser("idle_memory", __doc__)
    add_reading_args(ap)
    ap.add_argument("--group", choices=("lineno", "traceback", "filename"), default="lineno")
    ap.add_argument("--depth", type=int, default=8, help="frames kept per allocation (traceback grouping)")
    args = ap.parse_args()
    args.settle, args.settle_before = 2.0, 0.0
    snapshots, result = read_around_idle_sockets("idle-memory", SERVER_WRAPPER, {"IDLE_MEMORY_DEPTH": str(args.depth)},
                                                 args, lambda path: tracemalloc.Snapshot.load(str(path)), "snapshot")
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
