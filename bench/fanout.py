"""WebSocket fan-out benchmark: one message to 1,000 sockets in a room (SPEC §10).

    .venv/bin/python bench/fanout.py                   # every available target, bare first
    .venv/bin/python bench/fanout.py --targets bare    # just the reference
    .venv/bin/python bench/fanout.py --json out.json   # also save the raw results

For each target: start its server pinned to CPU 0, run the Node load generator
(bench/loadgen/fanout.js, `ws` 8) pinned to CPU 1, collect its JSON, stop the server.
Then print one table: frames/s, latency p50/p99, server and generator CPU, and the ratio of
each target's frames/s to the bare Tornado reference measured in the same run.

A target is a `Target(...)` in `targets` below; see bench/README.md for the contract.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LOADGEN = BENCH / "loadgen"
SERVER_CPU, LOADGEN_CPU = 0, 1


@dataclass
class Target:
    """How to start one server and drive one broadcast through it.

    `cmd`, `env` values and `url` are Python format strings: {python} {node} {port} {repo} {bench}.
    `join_frames`, `trigger_join_frames`, `trigger_frame` and `headers` values are sent by the
    generator after substituting ${var}: ${i} (socket index: room sockets 0..clients-1, trigger
    sockets clients..clients+window-1), ${seq} (broadcast number 0.., trigger_frame only), ${pad}
    (filler text), plus `vars` and whatever `setup(port)` returns (e.g. {"token": ...}).
    """
    name: str
    cmd: list[str]
    url: str = "ws://127.0.0.1:{port}/ws"
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "{repo}"
    headers: dict[str, str] = field(default_factory=dict)
    join_frames: list[str] = field(default_factory=list)  # each room socket, after connecting
    join_replies: int = 1                 # frames (any type) each room socket gets before measuring
    trigger_join_frames: list[str] = field(default_factory=list)  # each trigger socket, after connecting
    trigger_join_replies: int = 0         # frames each trigger socket gets before measuring
    trigger_frame: str = ""               # one broadcast; its `"seq":${seq}` must reach every socket
    vars: dict[str, str] = field(default_factory=dict)
    setup: Optional[Callable[[int], dict]] = None  # called once the port accepts; returns more vars
    ready_timeout_s: float = 30.0


# ~100-byte broadcast frame: {"type":"bench-message","data":{"seq":123,"text":"<48 x>"}}
TRIGGER_DATA = '{"seq":${seq},"text":"${pad}"}'

targets: dict[str, Optional[Target]] = {}

targets["bare"] = Target(
    name="bare",
    cmd=["{python}", "{bench}/bare_server.py", "--host", "127.0.0.1", "--port", "{port}"],
    join_frames=['{"type":"bench-join"}'],
    join_replies=1,  # {"type":"bench-joined"}
    trigger_frame='{"type":"bench-broadcast","data":' + TRIGGER_DATA + '}',
)

# Node 20 + ws 8, same protocol: the server a user of the original Node design would pick; also
# shows how much headroom the load generator has.
targets["node-ws"] = Target(
    name="node-ws",
    cmd=["{node}", "{bench}/loadgen/ws_server.js", "--port", "{port}"],
    join_frames=['{"type":"bench-join"}'],
    join_replies=1,
    trigger_frame='{"type":"bench-broadcast","data":' + TRIGGER_DATA + '}',
)

# ---------------------------------------------------------------------------------------------
# vachat's hub, through the benchmark plugin (bench/hub_plugin.py): every socket authenticates
# on the upgrade (the test-only auth plugin), gets `ready`, joins with `bench-join` and its ack;
# a broadcast is the plugin's `bench-message`. The server is `run.py` itself (its CPU is read
# from its pid), on a throw-away SQLite file, with limits and heartbeats out of the way.
targets["vachat"] = Target(
    name="vachat",
    cmd=["{python}", "{repo}/run.py", "serve"],
    env={"PORT": "{port}", "HOST": "127.0.0.1", "VACHAT_ENV": "test", "LOG_LEVEL": "WARNING", "LOG_DIR": "",
         "DATABASE_URL": "sqlite:////tmp/vachat-bench-{port}.db", "REDIS_URL": "",
         "VACHAT_PLUGIN_MODULES": "testauth=vachat.testing_auth,bench=bench.hub_plugin",
         "WS_RATE_LIMIT": "1000000/1s", "RATE_LIMIT_GLOBAL": "1000000/1s",
         "WS_PING_INTERVAL": "3600", "WS_PING_TIMEOUT": "3600"},
    headers={"Authorization": "Bearer test:u${i}"},
    join_frames=['{"type":"bench-join","id":"j${i}"}'],
    join_replies=2,  # ready + the join's ack
    trigger_join_replies=1,  # ready
    trigger_frame='{"type":"bench-broadcast","id":"b${seq}","data":' + TRIGGER_DATA + '}',
)
# ---------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"fanout: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        log(f"RLIMIT_NOFILE {soft} -> {new}")
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < want:
        log(f"WARNING: open-file limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} < {want}")


_libc = ctypes.CDLL(None, use_errno=True)
_children: list[subprocess.Popen] = []


def spawn(cmd, cpu, **kw) -> subprocess.Popen:
    """Start a child in its own process group, pinned to `cpu`, killed if we die."""
    pin = {cpu} if cpu in os.sched_getaffinity(0) else None

    def pre():
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: die with the benchmark
        if pin:
            os.sched_setaffinity(0, pin)

    if pin is None:
        log(f"WARNING: CPU {cpu} not available; {cmd[0]} not pinned")
    p = subprocess.Popen(cmd, preexec_fn=pre, start_new_session=True, **kw)
    _children.append(p)
    return p


def stop(p: subprocess.Popen, timeout: float = 5.0) -> None:
    if p.poll() is None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                p.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    if p in _children:
        _children.remove(p)


def stop_all() -> None:
    for p in list(_children):
        stop(p)


def wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not listen on port {port} within {timeout}s")


def ensure_loadgen() -> str:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        raise SystemExit("fanout: node and npm are required (Node >= 18)")
    if not (LOADGEN / "node_modules" / "ws" / "package.json").exists():
        how = "ci" if (LOADGEN / "package-lock.json").exists() else "install"
        log(f"installing the load generator's dependencies: npm {how}")
        subprocess.run([npm, how, "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=LOADGEN, check=True, timeout=300)
    return node


def run_target(t: Target, node: str, args) -> dict:
    port = free_port()
    fmt = dict(python=sys.executable, node=node, port=port, repo=str(REPO), bench=str(BENCH))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.update({k: v.format(**fmt) for k, v in t.env.items()})
    cmd = [c.format(**fmt) for c in t.cmd]
    log(f"[{t.name}] starting server on CPU {SERVER_CPU}: {' '.join(cmd)}")
    server = spawn(cmd, SERVER_CPU, cwd=t.cwd.format(**fmt), env=env, stdin=subprocess.DEVNULL)
    try:
        wait_port(port, server, t.ready_timeout_s)
        extra_vars = dict(t.vars)
        if t.setup:
            extra_vars.update(t.setup(port) or {})
        cfg = dict(
            url=t.url.format(**fmt), clients=args.clients, headers=t.headers,
            joinFrames=t.join_frames, joinReplies=t.join_replies,
            triggerJoinFrames=t.trigger_join_frames, triggerJoinReplies=t.trigger_join_replies,
            triggerFrame=t.trigger_frame, vars=extra_vars, padBytes=args.pad,
            broadcasts=args.broadcasts, warmup=args.warmup, durationS=args.duration,
            window=args.window, serverPid=server.pid, clkTck=os.sysconf("SC_CLK_TCK"),
            serverCpu=SERVER_CPU, generatorCpu=LOADGEN_CPU, client=args.client,
        )
        log(f"[{t.name}] load generator on CPU {LOADGEN_CPU}: {args.clients} sockets, "
            f"{args.broadcasts} broadcasts or {args.duration}s")
        gen = spawn([node, str(LOADGEN / "fanout.js"), json.dumps(cfg)], LOADGEN_CPU,
                    cwd=LOADGEN, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        try:
            out, _ = gen.communicate(timeout=args.duration + 180)
        finally:
            stop(gen)
        if server.poll() is not None:
            raise RuntimeError(f"server died during the run (code {server.returncode})")
        lines = [ln for ln in (out or "").splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"load generator printed no result (exit {gen.returncode})")
        res = json.loads(lines[-1])
        if "error" in res:
            raise RuntimeError(f"load generator: {res['error']}")
        if not res.get("broadcasts_measured"):
            raise RuntimeError(f"no measured broadcast completed ({res.get('reason')})")
        return res
    finally:
        stop(server)


def cpu_busy() -> dict[int, int]:
    """Busy ticks per CPU (user nice system irq softirq steal) from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for ln in f:
            if ln.startswith("cpu") and ln[3].isdigit():
                name, *v = ln.split()
                v = list(map(int, v))
                out[int(name[3:])] = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return out


def wait_idle(max_wait: float, threshold: float = 15.0) -> None:
    """On a shared machine, wait (at most max_wait s) until both benchmark cores are nearly idle;
    warn if they never are."""
    tck = os.sysconf("SC_CLK_TCK")
    end = time.monotonic() + max_wait
    while True:
        try:
            a = cpu_busy()
            time.sleep(1.0)
            b = cpu_busy()
        except OSError:
            return
        busy = {c: 100 * (b[c] - a[c]) / tck for c in (SERVER_CPU, LOADGEN_CPU) if c in a}
        if all(v < threshold for v in busy.values()):
            return
        if time.monotonic() >= end:
            log("WARNING: benchmark cores busy before the run (" +
                ", ".join(f"CPU {c} {v:.0f}%" for c, v in busy.items()) +
                "): figures will be low; see `ps -eo pid,psr,pcpu,args --sort=-pcpu`")
            return


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def fmt_num(x, spec):
    return "-" if x is None else format(x, spec)


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per target: its best run (highest frames/s: other load on a shared machine only ever
    lowers the figure), the spread over rounds, and best ÷ bare's best."""
    out = {}
    for name, rs in runs.items():
        ok = [r for r in rs if "error" not in r and r.get("frames_per_s")]
        if not ok:
            out[name] = {"error": rs[-1].get("error", "no result")}
            continue
        best = max(ok, key=lambda r: r["frames_per_s"])
        out[name] = dict(best, rounds=len(ok), frames_per_s_min=min(r["frames_per_s"] for r in ok),
                         frames_per_s_median=median([r["frames_per_s"] for r in ok]))
    bare = out.get("bare", {}).get("frames_per_s")
    for r in out.values():
        if "error" not in r:
            r["ratio_vs_bare"] = r["frames_per_s"] / bare if bare else None
    return out


def print_table(summary: dict[str, dict]) -> None:
    hdr = ["target", "frames/s", "p50 ms", "p99 ms", "server CPU %", "generator CPU %",
           "other load % (srv/gen core)", "ratio vs bare"]
    rows = []
    for name, r in summary.items():
        if "error" in r:
            rows.append([name, "error: " + r["error"][:70]] + [""] * (len(hdr) - 2))
            continue
        fps = fmt_num(r["frames_per_s"], ",d")
        if r["rounds"] > 1:
            fps += f" (min {r['frames_per_s_min']:,})"
        gen = fmt_num(r["generator_cpu_pct"], ".0f") + (" (saturated)" if r["generator_saturated"] else "")
        other = (fmt_num(r.get("other_cpu_pct_server_core"), ".0f") + " / "
                 + fmt_num(r.get("other_cpu_pct_generator_core"), ".0f"))
        rows.append([name, fps, fmt_num(r["latency_ms"]["p50"], ".1f"), fmt_num(r["latency_ms"]["p99"], ".1f"),
                     fmt_num(r["server_cpu_pct"], ".0f"), gen, other, fmt_num(r["ratio_vs_bare"], ".2f")])
    widths = [max(len(str(x)) for x in col) for col in zip(hdr, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(hdr))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    available = [n for n, t in targets.items() if t is not None]
    ap.add_argument("--targets", default=",".join(available),
                    help=f"comma list (default: {','.join(available)}); bare always runs, first, for the ratio")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every target this many times, alternating; report each one's best run (use 3 on a shared box)")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--broadcasts", type=int, default=200, help="measured broadcasts (after warm-up)")
    ap.add_argument("--duration", type=float, default=20.0, help="max measured seconds")
    ap.add_argument("--warmup", type=int, default=10, help="unmeasured broadcasts first")
    ap.add_argument("--window", type=int, default=2,
                    help="broadcasts in flight, each triggered over its own trigger socket")
    ap.add_argument("--client", choices=("raw", "ws"), default="raw",
                    help="generator's WebSocket client: lean hand-rolled frame counter, or the ws library")
    ap.add_argument("--pad", type=int, default=48, help="filler bytes in each message (~100-byte frame)")
    ap.add_argument("--wait-idle", type=float, default=20.0, metavar="S",
                    help="before each run, wait up to S seconds for CPUs 0 and 1 to be idle (shared machines)")
    ap.add_argument("--json", metavar="FILE", help="write every run's raw result and the summary here")
    args = ap.parse_args()

    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    for n in names:
        if n not in targets:
            ap.error(f"unknown target {n!r}; known: {', '.join(targets)}")
        if targets[n] is None:
            ap.error(f"target {n!r} is not wired yet (TODO slot in bench/fanout.py)")
    if "bare" not in names:
        names.insert(0, "bare")
    names.sort(key=lambda n: n != "bare")
    for n in [n for n, t in targets.items() if t is None]:
        log(f"target {n!r} skipped: not wired yet (TODO slot in bench/fanout.py)")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    raise_nofile(args.clients * 2 + 1024)
    node = ensure_loadgen()
    runs: dict[str, list[dict]] = {n: [] for n in names}
    try:
        for rnd in range(args.rounds):
            for n in names:
                if args.rounds > 1:
                    log(f"round {rnd + 1}/{args.rounds}")
                wait_idle(args.wait_idle)
                try:
                    r = run_target(targets[n], node, args)
                except RuntimeError as e:
                    log(f"[{n}] FAILED: {e}")
                    r = {"error": str(e)}
                runs[n].append(r)
                if "error" in r:
                    continue
                log(f"[{n}] {json.dumps(r)}")
                if r["seq_errors_socket0"] or r["extra_frames"] or r["broadcasts_incomplete"]:
                    log(f"[{n}] WARNING: seq_errors={r['seq_errors_socket0']} extra_frames={r['extra_frames']} "
                        f"incomplete={r['broadcasts_incomplete']} (frames missing {r['frames_missing']})")
                for core in ("server", "generator"):
                    o = r.get(f"other_cpu_pct_{core}_core")
                    if o is not None and o > 10:
                        log(f"[{n}] WARNING: {o:.0f}% of the {core}'s core went to other processes during the run")
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        stop_all()
    summary = summarize(runs)
    frame = next((r["frame_bytes"] for r in summary.values() if r.get("frame_bytes")), "?")
    nodev = subprocess.run([node, "-v"], capture_output=True, text=True).stdout.strip()
    print(f"\nfan-out: {args.clients} sockets, ~{frame}-byte frames, window {args.window}, {args.client} client, "
          f"{args.rounds} round(s); {os.cpu_count()} CPUs (server CPU {SERVER_CPU}, generator CPU {LOADGEN_CPU}); "
          f"python {sys.version.split()[0]}, node {nodev}")
    print_table(summary)
    if args.rounds > 1:
        print("(each target's best of its rounds; p50/p99/CPU columns are from that run)")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(args=vars(args), summary=summary, runs=runs), indent=2) + "\n")
    return 0 if all("error" not in r for r in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
