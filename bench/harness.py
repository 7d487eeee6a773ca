"""What every benchmark driver in bench/ shares: child processes pinned to one core each and
never left behind, CPU accounting from /proc, waiting for a quiet machine, the Node load
generator's install, and the printed result table.

The drivers (fanout.py, roundtrip.py, restlist.py) start a server pinned to ``SERVER_CPU`` and
a load generator pinned to ``LOADGEN_CPU``. Children are killed when the driver exits, however
it exits: ``stop_all`` in a ``finally``, SIGTERM turned into KeyboardInterrupt by
``install_signal_handlers``, and ``PR_SET_PDEATHSIG`` for a driver that is SIGKILLed.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LOADGEN = BENCH / "loadgen"
SERVER_CPU, LOADGEN_CPU = 0, 1
# Above this share of a benchmark core going to other processes, the figure is depressed.
OTHER_LOAD_WARN_PCT = 10

_name = "bench"


def set_name(name: str) -> None:
    """The prefix of this driver's progress lines on stderr."""
    global _name
    _name = name


def log(msg: str) -> None:
    print(f"{_name}: {msg}", file=sys.stderr, flush=True)


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


def spawn(cmd: list[str], cpu: int, **kw: Any) -> subprocess.Popen:
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
    loop_log = _loop_logs.pop(p.pid, None)
    if loop_log is not None:
        loop_log.mark_stopping()
    try:
        _stop(p, timeout)
    finally:
        if loop_log is not None:
            _loop_checked.append(loop_log.count())


def _stop(p: subprocess.Popen, timeout: float) -> None:
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


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT both end the run through KeyboardInterrupt (so `finally` cleans up),
    even when the driver was started with SIGINT ignored."""
    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


def start_server(cmd: list[str], env: dict[str, str], port: int, *, cwd: str | Path = REPO,
                 ready_timeout: float = 30.0) -> subprocess.Popen:
    """A server pinned to SERVER_CPU, returned once `port` accepts. `cmd` must be the server
    process itself (its CPU is read from its pid), not a shell or a wrapper that forks."""
    checked = _loop_check and _is_python(cmd)
    output: dict[str, Any] = {}
    if checked:  # the server's stdout and stderr (its log) into a file, for counting
        cmd = [cmd[0], str(BENCH / "loop_check.py"), *cmd[1:]]
        log_file = tempfile.NamedTemporaryFile(prefix="bench-loop-check-", suffix=".log", delete=False)
        output = dict(stdout=log_file, stderr=subprocess.STDOUT)
    log(f"starting server on CPU {SERVER_CPU}: {' '.join(cmd)}")
    server = spawn(cmd, SERVER_CPU, cwd=str(cwd), env=dict(os.environ, PYTHONUNBUFFERED="1", **env),
                   stdin=subprocess.DEVNULL, **output)
    if checked:
        log_file.close()
        _loop_logs[server.pid] = LoopLog(Path(log_file.name))
    try:
        wait_port(port, server, ready_timeout)
        if checked:
            _loop_logs[server.pid].mark_serving(port)
    except BaseException:
        stop(server)
        raise
    profile_dir = os.environ.get("BENCH_PROFILE_DIR")
    if profile_dir:
        _profile(server, Path(profile_dir))
    return server


def _profile(server: subprocess.Popen, where: Path) -> None:
    """BENCH_PROFILE_DIR=dir: sample the server with py-spy (collapsed stacks, one line per
    stack with its count) into dir/<server pid>.txt until it stops. py-spy runs on the
    generator's core, so profiled figures are lower; profile to see where time goes, never
    to report a figure."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    where.mkdir(parents=True, exist_ok=True)
    out = where / f"{server.pid}.txt"
    log(f"profiling the server with py-spy into {out}")
    spawn([py_spy, "record", "--pid", str(server.pid), "--rate", "250", "--nonblocking", "--gil", "--format", "raw",
           "--output", str(out)], LOADGEN_CPU, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_bare_server() -> tuple[subprocess.Popen, int]:
    """The bare Tornado reference (bench/bare_server.py) on a free port: (process, port)."""
    port = free_port()
    cmd = [sys.executable, str(BENCH / "bare_server.py"), "--host", "127.0.0.1", "--port", str(port)]
    return start_server(cmd, {}, port), port


def ensure_loadgen() -> str:
    """The `node` binary, with the generator's dependencies installed (npm ci, first run only)."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        raise SystemExit(f"{_name}: node and npm are required (Node >= 18)")
    if not (LOADGEN / "node_modules" / "ws" / "package.json").exists():
        how = "ci" if (LOADGEN / "package-lock.json").exists() else "install"
        log(f"installing the load generator's dependencies: npm {how}")
        subprocess.run([npm, how, "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=LOADGEN, check=True, timeout=300)
    return node


def run_generator(cmd: list[str], timeout: float) -> str:
    """Run a load generator pinned to LOADGEN_CPU; its stdout."""
    gen = spawn(cmd, LOADGEN_CPU, cwd=LOADGEN, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        out, _ = gen.communicate(timeout=timeout)
    finally:
        stop(gen)
    return out or ""


def generator_result(out: str) -> dict:
    """The generator's one-line JSON result (its last line starting with `{`)."""
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError("load generator printed no result")
    result = json.loads(lines[-1])
    if "error" in result:
        raise RuntimeError(f"load generator: {result['error']}")
    return result


def check_alive(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        raise RuntimeError(f"server died during the run (code {server.returncode})")


def new_parser(name: str, doc: Optional[str]) -> argparse.ArgumentParser:
    """The driver's argument parser; `name` prefixes its progress lines."""
    set_name(name)
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_run_args(ap: Any) -> None:
    """--rounds, --wait-idle and --json, as every driver takes them."""
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every target this many times, alternating; report each one's best run (use 3 on a shared box)")
    ap.add_argument("--wait-idle", type=float, default=20.0, metavar="S",
                    help="before each run, wait up to S seconds for CPUs 0 and 1 to be idle (shared machines)")
    ap.add_argument("--json", metavar="FILE", help="write every run's raw result and the summary here")
    ap.add_argument("--loop-check", action="store_true",
                    help=f"then run every target once more with asyncio's debug mode and a {SLOW_CALLBACK_MS} ms "
                         "slow-callback threshold in its Python server, and count the callbacks that held the "
                         "loop that long (that run's figures are distorted by debug mode and not reported)")


def save_json(path: Optional[str], args: Any, summary: dict, runs: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(dict(args=vars(args), summary=summary, runs=runs), indent=2) + "\n")


# -- CPU accounting ---------------------------------------------------------------------------


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


def process_ticks(pid: int) -> int:
    """user + system clock ticks of process `pid` and its waited-for children so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class CpuMeter:
    """CPU of the server and the generator, and the rest of their two cores' load, over an
    interval: `start()` ... `stop()` -> dict of % of one core. With no generator pid, the
    generator is the children this process reaped in between (a `wrk` run to completion)."""

    def __init__(self, server_pid: int, generator_pid: int | None = None) -> None:
        self.server_pid, self.generator_pid = server_pid, generator_pid
        self.tck = os.sysconf("SC_CLK_TCK")

    def _generator_seconds(self) -> float | None:
        if self.generator_pid is None:
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            return usage.ru_utime + usage.ru_stime
        try:
            return process_ticks(self.generator_pid) / self.tck
        except OSError:
            return None

    def _sample(self) -> tuple[float, float | None, float | None, dict[int, int]]:
        try:
            server = process_ticks(self.server_pid) / self.tck
        except OSError:
            server = None
        return time.monotonic(), server, self._generator_seconds(), cpu_busy()

    def start(self) -> None:
        self._t0 = self._sample()

    def stop(self) -> dict[str, float | None]:
        (t0, s0, g0, c0), (t1, s1, g1, c1) = self._t0, self._sample()
        wall = max(1e-6, t1 - t0)
        own = {"server": 100 * (s1 - s0) / wall if s0 is not None and s1 is not None else None,
               "generator": 100 * (g1 - g0) / wall if g0 is not None and g1 is not None else None}
        out: dict[str, float | None] = {f"{n}_cpu_pct": v for n, v in own.items()}
        for cpu, name in ((SERVER_CPU, "server"), (LOADGEN_CPU, "generator")):
            busy = 100 * (c1.get(cpu, 0) - c0.get(cpu, 0)) / self.tck / wall if cpu in c0 else None
            out[f"other_cpu_pct_{name}_core"] = (max(0.0, busy - own[name])
                                                 if busy is not None and own[name] is not None else None)
        return out


def warn_other_load(label: str, result: dict) -> None:
    for core in ("server", "generator"):
        other = result.get(f"other_cpu_pct_{core}_core")
        if other is not None and other > OTHER_LOAD_WARN_PCT:
            log(f"[{label}] WARNING: {other:.0f}% of the {core}'s core went to other processes during the run")


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


# -- figures ----------------------------------------------------------------------------------


def median(xs: Iterable[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def percentile(sorted_xs: list[float], q: float) -> Optional[float]:
    """The nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_xs:
        return None
    return sorted_xs[min(len(sorted_xs) - 1, max(0, math.ceil(q * len(sorted_xs)) - 1))]


def fmt_num(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def best_of(runs: list[dict], key: str) -> dict:
    """The run with the highest `key` (other load on a shared machine only ever lowers a
    figure), with `rounds` and the worst value as `<key>_min`."""
    ok = [r for r in runs if "error" not in r and r.get(key)]
    if not ok:
        return {"error": runs[-1].get("error", "no result") if runs else "no run"}
    best = max(ok, key=lambda r: r[key])
    return dict(best, rounds=len(ok), **{f"{key}_min": min(r[key] for r in ok)})


def print_table(header: list[str], rows: list[list[Any]]) -> None:
    """A Markdown table (pasteable into bench/README.md)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))


def target_verdict(ok: Optional[bool]) -> str:
    return "-" if ok is None else ("met" if ok else "NOT met")


def machine_line() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(next(ln.split()[1] for ln in f if ln.startswith("MemTotal")))
        mem = f"{mem_kib / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        mem = "?"
    return (f"{os.cpu_count()} CPUs ({model}), {mem}; server CPU {SERVER_CPU}, generator CPU {LOADGEN_CPU}; "
            f"python {platform.python_version()}")


def run_rounds(names: list[str], rounds: int, idle_wait: float, run_one: Callable[[str], dict]) -> dict[str, list[dict]]:
    """Run every name `rounds` times, alternating, each after waiting for quiet cores; a
    failed run is recorded as {"error": ...}. Children are stopped however this ends."""
    runs: dict[str, list[dict]] = {n: [] for n in names}
    try:
        for rnd in range(rounds):
            for n in names:
                if rounds > 1:
                    log(f"round {rnd + 1}/{rounds}")
                wait_idle(idle_wait)
                try:
                    result = run_one(n)
                except RuntimeError as e:
                    log(f"[{n}] FAILED: {e}")
                    result = {"error": str(e)}
                runs[n].append(result)
                if "error" not in result:
                    warn_other_load(n, result)
    finally:
        stop_all()
    return runs


def run_targets(runners: dict[str, Callable[[], dict]], args: Any,
                key: str) -> Optional[tuple[dict[str, dict], dict[str, list[dict]]]]:
    """Run each target `args.rounds` times (alternating) and keep each one's best run by `key`:
    (summary, every run), or None when interrupted. Each result is logged as it comes."""
    install_signal_handlers()

    def run_one(name: str) -> dict:
        result = runners[name]()
        log(f"[{name}] {json.dumps(result)}")
        return result

    try:
        runs = run_rounds(list(runners), args.rounds, args.wait_idle, run_one)
        summary = {name: best_of(rs, key) for name, rs in runs.items()}
        if getattr(args, "loop_check", False):
            for name, checked in run_loop_check(runners, args.wait_idle).items():
                # Apart from `runs`: a debug run's figures must not reach a best, a minimum or a median.
                summary[name]["loop_check"] = checked
                summary[name]["slow_callbacks"] = checked.get("slow_callbacks")
    except KeyboardInterrupt:
        log("interrupted")
        return None
    return summary, runs


# -- the asyncio slow-callback check (--loop-check) -------------------------------------------

SLOW_CALLBACK_MS = 10
# asyncio's debug-mode warning (base_events._run_once), wherever the server's log puts it.
_SLOW_CALLBACK = re.compile(r"Executing (.*?) took (\d+\.\d+) seconds")
# bench/loop_check.py's own line: the callback's CPU time on the loop's thread (immune to other load).
_CPU_HELD = re.compile(r"Callback held the loop's CPU (\d+\.\d+) seconds: (.*)")
_GC_PAUSE = re.compile(r"GC of generation \d .*")
_FULL_GC = re.compile(r"GC of generation 2 took (\d+\.\d+) seconds")
_loop_check = False
_loop_logs: dict[int, "LoopLog"] = {}  # running checked servers, by pid
_loop_checked: list[dict] = []  # the counts of checked servers stopped since the last take


def _is_python(cmd: list[str]) -> bool:
    return Path(cmd[0]).name.startswith("python") or cmd[0] == sys.executable


class LoopLog:
    """A checked server's log and the window that counts: from its first answer (its start-up
    callbacks are over) to the SIGTERM (its shutdown is not measured). What falls outside is
    counted apart: start-up work before serving blocks no client."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.serving_from: int | None = None
        self.serving_to: int | None = None

    def mark_serving(self, port: int) -> None:
        """Wait for an answer to one request: every callback before it has finished."""
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /loop-check-ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            sock.recv(1)
        time.sleep(0.2)  # the log line of the callback that answered it, printed once it returns
        self.serving_from = self.path.stat().st_size

    def mark_stopping(self) -> None:
        self.serving_to = self.path.stat().st_size

    def count(self) -> dict:
        """{"slow_callbacks": n in the serving window, "slowest_ms", "start_up", "shutdown", "lines"}."""
        text = self.path.read_bytes()
        self.path.unlink(missing_ok=True)
        start, end = self.serving_from or 0, self.serving_to if self.serving_to is not None else len(text)
        parts = {k: v.decode("utf-8", "replace") for k, v in (
            ("start_up", text[:start] if self.serving_from is not None else b""), ("serving", text[start:end]),
            ("shutdown", text[end:]))}
        found = {k: _SLOW_CALLBACK.findall(v) for k, v in parts.items()}
        serving = found["serving"]
        cpu_held = _CPU_HELD.findall(parts["serving"])
        gc_pauses = _GC_PAUSE.findall(parts["serving"])
        full = [float(s) * 1000 for s in _FULL_GC.findall(parts["serving"])]
        return {"slow_callbacks": len(serving), "cpu_held": len(cpu_held), "full_gc_ms": full,
                "cpu_held_lines": [f"{float(s) * 1000:.0f} ms CPU: {what[:1500]}" for s, what in cpu_held[:10]],
                "gc_lines": gc_pauses[:10],
                "slowest_ms": round(max(float(s) for _, s in serving) * 1000, 1) if serving else None,
                "start_up": len(found["start_up"]), "shutdown": len(found["shutdown"]),
                "lines": [f"{float(s) * 1000:.0f} ms: {what[:300]}" for what, s in serving[:10]]}


def take_loop_checked() -> list[dict]:
    """The counts of the checked servers stopped since the last call."""
    out = list(_loop_checked)
    _loop_checked.clear()
    return out


def run_loop_check(runners: dict[str, Callable[[], dict]], idle_wait: float) -> dict[str, dict]:
    """Run each target once more with its Python server checked (bench/loop_check.py); print
    "slow callbacks (>= 10 ms): N" for each. {name: its run's result with the counts}."""
    global _loop_check
    out: dict[str, dict] = {}
    _loop_check = True
    try:
        for name, runner in runners.items():
            log(f"[{name}] loop check: asyncio debug mode, slow callbacks >= {SLOW_CALLBACK_MS} ms")
            wait_idle(idle_wait)
            take_loop_checked()
            try:
                result = runner()
            except RuntimeError as e:
                result = {"error": str(e)}
            checked = take_loop_checked()
            if checked:
                result.update(slow_callbacks=sum(c["slow_callbacks"] for c in checked),
                              slow_callbacks_cpu_held=sum(c["cpu_held"] for c in checked),
                              cpu_held_lines=[ln for c in checked for ln in c["cpu_held_lines"]],
                              gc_pause_lines=[ln for c in checked for ln in c["gc_lines"]],
                              full_gc_ms=[round(ms, 1) for c in checked for ms in c["full_gc_ms"]],
                              slowest_ms=max((c["slowest_ms"] or 0 for c in checked), default=None) or None,
                              slow_callbacks_start_up=sum(c["start_up"] for c in checked),
                              slow_callbacks_shutdown=sum(c["shutdown"] for c in checked),
                              slow_callback_lines=[ln for c in checked for ln in c["lines"]])
            log(f"[{name}] loop-check run (figures distorted by debug mode): {json.dumps(result)}")
            out[name] = result
    finally:
        _loop_check = False
        stop_all()
    for name, r in out.items():
        print_loop_check(name, r)
    return out


def print_loop_check(name: str, result: dict) -> None:
    """The line every driver prints for each target after `--loop-check`."""
    if "slow_callbacks" not in result:
        why = result.get("error") or "not a Python server"
        print(f"[{name}] slow callbacks (>= {SLOW_CALLBACK_MS} ms): n/a ({why[:100]})")
        return
    if os.environ.get("BENCH_LOOP_DEBUG", "1") == "0":
        print(f"[{name}] slow callbacks (>= {SLOW_CALLBACK_MS} ms): not counted (BENCH_LOOP_DEBUG=0: asyncio's check off)")
    else:
        print(f"[{name}] slow callbacks (>= {SLOW_CALLBACK_MS} ms): {result['slow_callbacks']}"
              + (f", the slowest {result['slowest_ms']} ms" if result["slow_callbacks"] else "")
              + f" (while serving; start-up {result['slow_callbacks_start_up']}, shutdown "
              f"{result['slow_callbacks_shutdown']}, not counted; asyncio debug run"
              + (f", which failed: {result['error'][:80]}" if "error" in result else "") + ")")
        for line in result["slow_callback_lines"]:
            print(f"    {line}")
    print(f"[{name}] of which held the loop's CPU >= {SLOW_CALLBACK_MS} ms (not another process's time slice): "
          f"{result['slow_callbacks_cpu_held']}")
    for line in result["cpu_held_lines"]:
        print(f"    {line}")
    full = result.get("full_gc_ms") or []
    print(f"[{name}] full garbage collections of >= {SLOW_CALLBACK_MS / 2:g} ms CPU while serving: {len(full)}"
          + (f", the slowest {max(full):.0f} ms, {sum(full):.0f} ms in all" if full else ""))
    if result["gc_pause_lines"]:
        print(f"[{name}] garbage collections of >= {SLOW_CALLBACK_MS / 2:g} ms meanwhile (inside some callback; the first ten):")
        for line in result["gc_pause_lines"]:
            print(f"    {line}")
