"""Where a profiled server spends its time: the top functions of a py-spy collapsed-stack file
(BENCH_PROFILE_DIR, see bench/README.md), by inclusive share of samples, per thread.

    .venv/bin/python bench/profile_top.py /tmp/prof/1234.txt [--top 30] [--thread MainThread]
"""
from __future__ import annotations

import argparse
import collections
import re

# py-spy frame: "function (file.py:line)"; its thread is the first frame: "thread (0x…)" or a name
FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--thread", default=None, help="only stacks whose thread name contains this")
    args = ap.parse_args()
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.file) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue  # a line cut short when py-spy was stopped
            frames = stack.split(";")
            thread = frames[0]
            if args.thread and args.thread not in thread:
                continue
            n = int(count)
            total += n
            threads[re.sub(r" \(0x[0-9a-f]+\)|-\d+$|_\d+$", "", thread)] += n
            names = []
            for frame in frames[1:]:
                m = FRAME.match(frame)
                names.append(f"{m['fn']} ({m['file'].rsplit('/', 1)[-1]})" if m else frame)
            for name in set(names):
                inclusive[name] += n
            if names:
                own[names[-1]] += n
    print(f"{total} samples")
    for name, n in threads.most_common():
        print(f"  thread {name}: {100 * n / total:.1f}%")
    print(f"\n{'incl %':>7} {'self %':>7}  function")
    for name, n in inclusive.most_common(args.top):
        print(f"{100 * n / total:7.1f} {100 * own[name] / total:7.1f}  {name}")


if __name__ == "__main__":
    main()
