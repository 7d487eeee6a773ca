"""What the garbage collector walks per idle authenticated socket: a census of the full server.

    .venv/bin/python bench/gc_objects.py                       # 2,000 sockets, top 25 types
    .venv/bin/python bench/gc_objects.py --sockets 10000 --threshold 700,10,100

The server of bench/idle_sockets.py (`run.py serve`, every plugin, SQLite, chat_stack's
settings) runs with a hook that, on SIGUSR1, writes the objects the collector tracks
(`gc.get_objects()`: generations 0-2, not what start-up's `gc.freeze()` moved to the permanent
generation) counted by type, `gc.get_freeze_count()`, and the thread CPU time of one full
collection (`gc.collect()`, the fastest of five), and how many full collections ran while
the sockets connected. The driver takes a census before the generator
(bench/loadgen/idle.js) connects and another once every socket is authenticated and idle, and
prints the tracked objects each socket adds, by type: what every full collection walks again
and again while sockets pile up (Python 3.11's collector is not incremental). The server runs
with `GC_FULL_COLLECTION_INTERVAL=0` (nothing frozen but start-up's objects): what it counts
is then what Python's own schedule walks, and what the node's periodic full collection walks.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import new_parser
from bench.idle_sockets import add_reading_args, read_around_idle_sockets

# Runs in the server process: a census written to $READING.<n> on each SIGUSR1.
SERVER_WRAPPER = """
import collections, gc, json, os, runpy, signal, sys, time
taken = [0]
full_collections, started = [], [0.0]
def on_gc(phase, info):  # every full collection's thread CPU (the census's own included)
    if info["generation"] == 2:
        if phase == "start":
            started[0] = time.thread_time()
        else:
            full_collections.append((time.thread_time() - started[0]) * 1000)
gc.callbacks.append(on_gc)
def census(signum, frame):
    gc.collect()
    times = []
    for _ in range(5):  # the fastest of five: a first pass also pays for cold caches
        started = time.thread_time()
        gc.collect()
        times.append((time.thread_time() - started) * 1000)
    full_ms = min(times)
    objects = gc.get_objects()
    by_type = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
    path = f"{os.environ['READING']}.{taken[0]}"
    taken[0] += 1
    with open(path + ".part", "w") as out:
        json.dump(dict(full_collections_ms=list(full_collections), tracked=len(objects), frozen=gc.get_freeze_count(), full_ms=full_ms, full_ms_all=times,
                       by_type=by_type, stats=gc.get_stats(), threshold=gc.get_threshold()), out)
    del objects
    os.rename(path + ".part", path)
signal.signal(signal.SIGUSR1, census)
if os.environ.get("GC_THRESHOLD"):  # --threshold: what other thresholds would do
    gc.set_threshold(*map(int, os.environ["GC_THRESHOLD"].split(",")))
sys.argv = ["run.py", "serve"]
runpy.run_path("run.py", run_name="__main__")
"""


def main() -> int:
    ap = new_parser("gc_objects", __doc__)
    add_reading_args(ap)
    ap.add_argument("--threshold", default="", help="the server's gc.set_threshold(), e.g. 700,10,100 (default: Python's)")
    args = ap.parse_args()
    args.settle, args.settle_before = 2.0, 0.0
    # GC_FULL_COLLECTION_INTERVAL=0: nothing but start-up's objects frozen, so that the census
    # sees every object the node's periodic full collection walks.
    taken, _ = read_around_idle_sockets("gc-objects", SERVER_WRAPPER,
                                        {"GC_THRESHOLD": args.threshold, "GC_FULL_COLLECTION_INTERVAL": "0"}, args,
                                        lambda path: json.loads(path.read_text()), "census")
    before, after = taken
    n = args.sockets
    print("collections (ms):", [round(x, 1) for x in before["full_ms_all"]], [round(x, 1) for x in after["full_ms_all"]])
    print(f"\nbefore the sockets: {before['tracked']:,} tracked objects ({before['frozen']:,} frozen at start-up), "
          f"a full collection {before['full_ms']:.1f} ms CPU")
    print(f"{n:,} idle authenticated sockets: {after['tracked']:,} tracked objects "
          f"({(after['tracked'] - before['tracked']) / n:.1f} per socket), a full collection {after['full_ms']:.1f} ms CPU "
          f"({(after['full_ms'] - before['full_ms']) / n * 1000:.2f} µs per socket); thresholds {after['threshold']}")
    # The census's own six collections are not the connect's.
    during = after["full_collections_ms"][len(before["full_collections_ms"]):-6]
    print(f"full collections while the sockets connected: {len(during)}"
          + (f", the slowest {max(during):.0f} ms CPU, {sum(during):.0f} ms in all" if during else "")
          + f" (thresholds {after['threshold']})")
    grown = Counter(after["by_type"])
    grown.subtract(before["by_type"])
    for name, count in grown.most_common(args.top):
        print(f"{count / n:8.2f} per socket  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
