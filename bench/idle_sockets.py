"""Idle authenticated sockets (issue #19, target 4): server memory per socket at 10,000 sockets
and the connect + authenticate rate, beside a bare Tornado server and Node's ws.

    .venv/bin/python bench/idle_sockets.py                      # bare, node, vachat; 10,000 sockets
    .venv/bin/python bench/idle_sockets.py --rounds 3           # alternate, keep each one's best
    .venv/bin/python bench/idle_sockets.py --targets bare,vachat --sockets 2000

Every target authenticates each socket on the upgrade with `Authorization: Bearer <access
JWT>` (HS256, the claims vachat issues: sub, sid, typ, jti, iat, exp, iss), each socket its own
token, and answers a `ready` frame once it knows who is there:

- `bare`: bench/bare_server.py `/ws/auth`, what a Tornado user writes (PyJWT `jwt.decode`,
  a dict of sockets per user, `write_message` of the ready frame);
- `node`: bench/loadgen/ws_server.js `/ws/auth`, Node + ws, the token checked with node's crypto
  HMAC (no JWT library);
- `vachat`: the full server (`run.py serve`, every plugin, SQLite, chat_stack's settings, limits
  lifted through its environment only), with real access tokens: `--accounts` accounts signed
  up through `POST /api/auth/register`, and as many tokens as sockets minted through
  `POST /api/auth/refresh` (each refresh rotates the session's refresh token and gives a new
  access token), so no two sockets present the same token; vachat's real authentication runs
  for each (signature, claims, the session's revocation check).

The generator (bench/loadgen/idle.js, CPU 1) opens `--sockets` sockets with at most
`--concurrency` of them connecting or authenticating at once, and times it until the last one
got `ready`: the connect + authenticate rate (sockets/s; higher is better). It then holds
them idle. The driver reads the server's resident memory (`VmRSS` of /proc/<pid>/status) just
before the generator starts and `--settle` seconds after every socket is idle, and divides
the growth by the sockets: KiB per socket (LOWER is better). It also reports the server's CPU
time per connect + authenticate (µs, lower is better; steadier than the rate when other
processes share the server's core). Ratios are to `bare` measured in
the same run. The server runs on CPU 0.
"""
from __future__ import annotations

import functools
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jwt

from bench import chat_stack
from bench.harness import (
    BENCH, LOADGEN, LOADGEN_CPU, REPO, SERVER_CPU, add_run_args, check_alive, ensure_loadgen, fmt_num, free_port,
    generator_result, install_signal_handlers, log, machine_line, new_parser, print_table, raise_nofile,
    run_loop_check, run_rounds, save_json, spawn, start_server, stop, target_verdict,
)

TARGETS = ("bare", "node", "vachat")
# Issue #19, target 4: memory per idle socket at most the bare server's, connect + authenticate
# at least as fast as it (Node's figures are the moonshot).
MAX_KIB_RATIO, MIN_RATE_RATIO = 1.0, 1.0
ACCESS_TTL_S = 15 * 60
REFRESH_CONCURRENCY = 8


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def bench_tokens(secret: str, sockets: int, accounts: int) -> list[str]:
    """Access tokens shaped like vachat's, one per socket, signed with `secret` (bare, node)."""
    now = int(time.time())
    users = [f"user{n:05d}" for n in range(accounts)]
    return [jwt.encode({"sub": users[i % accounts], "sid": f"session{i % accounts:05d}", "typ": "access",
                        "jti": secrets.token_urlsafe(16), "iat": now, "exp": now + ACCESS_TTL_S, "iss": "vachat"},
                       secret, algorithm="HS256") for i in range(sockets)]


def vachat_tokens(api: chat_stack.Api, sockets: int, accounts: int) -> list[str]:
    """`sockets` distinct real access tokens: `accounts` sign-ups, then refreshes of each one's
    session (socket i gets a token of account i % accounts)."""
    started = time.monotonic()

    def sign_up(n: int) -> dict[str, Any]:
        answer = api.call("POST", "/api/auth/register", {
            "email": f"idle{api.port}-{n}@bench.example", "password": chat_stack.PASSWORD,
            "displayName": f"idle {n}"})
        return answer["tokens"]

    def mint(n: int) -> list[str]:
        tokens = first[n]
        out = [tokens["accessToken"]]
        for _ in range(n, sockets, accounts)[1:]:
            tokens = api.call("POST", "/api/auth/refresh", {"refreshToken": tokens["refreshToken"]})["tokens"]
            out.append(tokens["accessToken"])
        return out

    with ThreadPoolExecutor(chat_stack.SETUP_CONCURRENCY) as pool:
        first = list(pool.map(sign_up, range(accounts)))
    with ThreadPoolExecutor(REFRESH_CONCURRENCY) as pool:
        per_account = list(pool.map(mint, range(accounts)))
    tokens = [per_account[i % accounts][i // accounts] for i in range(sockets)]
    assert len(set(tokens)) == sockets
    log(f"{accounts} accounts signed up, {sockets} access tokens minted in {time.monotonic() - started:.1f}s")
    return tokens


def drive(node: str, server_pid: int, url: str, tokens: list[str], args: Any, *,
          before_connecting: Callable[[], None] | None = None, while_idle: Callable[[], None] | None = None) -> dict:
    """Run the generator against a started server: its result, with the RSS figures.
    `before_connecting` and `while_idle` run right after each RSS reading (bench/idle_memory.py)."""
    cfg = dict(url=url, sockets=args.sockets, concurrency=args.concurrency,
               headers={"Authorization": "Bearer ${token}"}, readyFrames=1, vars={"token": tokens},
               serverPid=server_pid, clkTck=os.sysconf("SC_CLK_TCK"), serverCpu=SERVER_CPU,
               generatorCpu=LOADGEN_CPU)
    time.sleep(args.settle_before)
    before = rss_kib(server_pid)
    if before_connecting is not None:
        before_connecting()
    with tempfile.NamedTemporaryFile("w", prefix="idle-sockets-", suffix=".json", delete=False) as config:
        json.dump(cfg, config)  # 10,000 tokens are too long for a command line
    gen = spawn([node, str(LOADGEN / "idle.js"), "@" + config.name], LOADGEN_CPU, cwd=LOADGEN,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert gen.stdout is not None and gen.stdin is not None
        line = gen.stdout.readline()
        result = generator_result(line)
        time.sleep(args.settle)
        after = rss_kib(server_pid)
        if while_idle is not None:
            while_idle()
        gen.stdin.close()
        done = generator_result(gen.stdout.read())
    finally:
        stop(gen)
        os.unlink(config.name)
    result.update(done, phase="done", rss_before_kib=before, rss_after_kib=after,
                  kib_per_socket=round((after - before) / args.sockets, 2))
    if result.get("server_cpu_pct") is not None:
        # The server's CPU time per connect + authenticate: unlike the rate, other load on the
        # server's core barely moves it (the figure to compare on a shared machine).
        result["server_cpu_us_per_socket"] = round(
            result["server_cpu_pct"] / 100 * result["seconds"] / args.sockets * 1e6, 1)
    if done["lost"]:
        raise RuntimeError(f"{done['lost']} sockets closed while idle ({done['first_loss']})")
    return result


def add_reading_args(ap: Any) -> None:
    """The options of a driver that reads the server before and after its idle sockets
    connect (``read_around_idle_sockets``)."""
    ap.add_argument("--sockets", type=int, default=2000)
    ap.add_argument("--accounts", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--top", type=int, default=25)


def read_around_idle_sockets(name: str, wrapper: str, env: dict[str, str], args: Any,
                             read: Callable[[int, Path], Any], what: str) -> tuple[list[Any], dict]:
    """Serve vachat on SQLite through ``wrapper`` (a ``python -c`` program that runs run.py and
    answers each SIGUSR1 by writing a reading to ``$READING.<n>``, renamed into place when
    complete), connect ``args.sockets`` authenticated idle sockets, and take a reading before
    they connect and once they are idle (``read(path)`` loads one): the two readings and the
    generator's result. ``env`` adds to the server's environment (bench/idle_memory.py,
    bench/gc_objects.py)."""
    raise_nofile(args.sockets + 2048)
    node = ensure_loadgen()
    port = free_port()
    db = chat_stack.BenchDatabase("sqlite", f"{name}-{port}")
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    server_env = chat_stack.server_env(port, db.url)
    server_env.update(env, READING=str(workdir / "reading"))
    server = start_server([sys.executable, "-c", wrapper], server_env, port, cwd=REPO, ready_timeout=120)
    readings: list[Any] = []

    def take_next() -> None:
        path = workdir / f"reading.{len(readings)}"
        os.kill(server.pid, signal.SIGUSR1)
        end = time.monotonic() + 120
        while not path.exists():
            if time.monotonic() > end:
                raise RuntimeError(f"the server wrote no {what} {path} within 120 s")
            time.sleep(0.2)
        readings.append(read(path))

    try:
        tokens = vachat_tokens(chat_stack.Api(port), args.sockets, args.accounts)
        result = drive(node, server.pid, f"ws://127.0.0.1:{port}/ws", tokens, args,
                       before_connecting=take_next, while_idle=take_next)
    finally:
        stop(server)
        db.drop()
    return readings, result


def run_bare(node: str, args: Any) -> dict:
    secret = secrets.token_urlsafe(48)
    tokens = bench_tokens(secret, args.sockets, args.accounts)
    port = free_port()
    cmd = [sys.executable, str(BENCH / "bare_server.py"), "--host", "127.0.0.1", "--port", str(port)]
    server = start_server(cmd, {"BENCH_JWT_SECRET": secret}, port)
    try:
        return drive(node, server.pid, f"ws://127.0.0.1:{port}/ws/auth", tokens, args)
    finally:
        stop(server)


def run_node(node: str, args: Any) -> dict:
    secret = secrets.token_urlsafe(48)
    tokens = bench_tokens(secret, args.sockets, args.accounts)
    port = free_port()
    server = start_server([node, str(LOADGEN / "ws_server.js"), "--port", str(port)],
                          {"BENCH_JWT_SECRET": secret}, port, cwd=LOADGEN)
    try:
        return drive(node, server.pid, f"ws://127.0.0.1:{port}/ws/auth", tokens, args)
    finally:
        stop(server)


def run_vachat(node: str, args: Any) -> dict:
    with chat_stack.running_vachat("sqlite", "idle") as (server, api, db):
        tokens = vachat_tokens(api, args.sockets, args.accounts)
        result = drive(node, server.pid, f"ws://127.0.0.1:{api.port}/ws", tokens, args)
        check_alive(server)
        return result


def summarize(runs: list[dict]) -> dict:
    """The fastest run's rate, the smallest memory per socket (other load only ever lowers the
    rate; it does not shrink memory)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1].get("error", "no result") if runs else "no run"}
    fastest = max(ok, key=lambda r: r["sockets_per_s"])
    leanest = min(ok, key=lambda r: r["kib_per_socket"])
    costs = [r["server_cpu_us_per_socket"] for r in ok if r.get("server_cpu_us_per_socket")]
    return dict(fastest, kib_per_socket=leanest["kib_per_socket"], rss_before_kib=leanest["rss_before_kib"],
                rss_after_kib=leanest["rss_after_kib"], rounds=len(ok),
                server_cpu_us_per_socket=min(costs) if costs else None,
                sockets_per_s_min=min(r["sockets_per_s"] for r in ok))


def main() -> int:
    ap = new_parser("idle_sockets", __doc__)
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated, from " + ", ".join(TARGETS))
    ap.add_argument("--sockets", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=100, help="sockets connecting/authenticating at once")
    ap.add_argument("--accounts", type=int, default=100, help="users the sockets belong to (socket i: user i %% n)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds idle before the RSS is read")
    ap.add_argument("--settle-before", type=float, default=1.0, help="seconds before the first RSS reading")
    add_run_args(ap)
    args = ap.parse_args()
    names = [t for t in args.targets.split(",") if t]
    if "bare" not in names:
        names.insert(0, "bare")  # every ratio is to the bare server of the same run
    unknown = set(names) - set(TARGETS)
    if unknown:
        ap.error(f"unknown targets: {', '.join(sorted(unknown))}")

    raise_nofile(args.sockets + 2048)  # inherited by the server and the generator
    node = ensure_loadgen()
    runners = {"bare": run_bare, "node": run_node, "vachat": run_vachat}
    install_signal_handlers()

    def run_one(name: str) -> dict:
        result = runners[name](node, args)
        log(f"[{name}] {json.dumps(result)}")
        return result

    try:
        runs = run_rounds(names, args.rounds, args.wait_idle, run_one)
        checked = (run_loop_check({name: functools.partial(runners[name], node, args) for name in names},
                                  args.wait_idle) if args.loop_check else {})
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    summary = {name: summarize(rs) for name, rs in runs.items()}
    for name, result in checked.items():  # apart from the rounds: debug mode distorts its figures
        summary[name]["loop_check"] = result
    bare = summary["bare"]
    label = {"bare": "bare Tornado (PyJWT)", "node": "Node + ws (crypto HMAC)", "vachat": "vachat (full server)"}
    rows = []
    for name, r in summary.items():
        if "error" in r:
            rows.append([label[name], "error: " + r["error"][:80]] + [""] * 9)
            continue
        ok = "error" not in bare
        kib_ratio = r["kib_per_socket"] / bare["kib_per_socket"] if ok and bare["kib_per_socket"] > 0 else None
        rate_ratio = r["sockets_per_s"] / bare["sockets_per_s"] if ok else None
        r["kib_ratio"], r["rate_ratio"] = kib_ratio, rate_ratio
        rows.append([label[name], fmt_num(r["kib_per_socket"], ".2f"), fmt_num(kib_ratio, ".2f"),
                     f"{r['rss_before_kib'] / 1024:.1f} -> {r['rss_after_kib'] / 1024:.1f}",
                     fmt_num(r["sockets_per_s"], ",d"), fmt_num(rate_ratio, ".2f"),
                     fmt_num(r.get("server_cpu_us_per_socket"), ".0f"),
                     fmt_num(r["latency_ms"]["p50"], ".1f") + " / " + fmt_num(r["latency_ms"]["p99"], ".1f"),
                     fmt_num(r["server_cpu_pct"], ".0f") + " / " + fmt_num(r["generator_cpu_pct"], ".0f"),
                     fmt_num(r.get("other_cpu_pct_server_core"), ".0f") + " / "
                     + fmt_num(r.get("other_cpu_pct_generator_core"), ".0f")])
    print(f"\nidle sockets: {args.sockets:,} authenticated sockets ({args.accounts} users, one token each), "
          f"{args.concurrency} connecting at once, RSS read {args.settle:g}s after the last; {args.rounds} round(s); "
          f"{machine_line()}")
    print_table(["target", "KiB/socket (lower is better)", "ratio to bare", "RSS MiB before -> after",
                 "connect+auth sockets/s (higher is better)", "ratio to bare",
                 "server CPU us/socket (lower is better)", "connect p50 / p99 ms",
                 "CPU % srv / gen (connecting)", "other load % (srv/gen core)"], rows)
    chat: Optional[dict] = summary.get("vachat")
    if chat is not None and "error" not in chat and "error" not in bare:
        print(f"target KiB/socket <= {MAX_KIB_RATIO:g}x bare: {chat['kib_ratio']:.2f}x, "
              f"{target_verdict(chat['kib_ratio'] <= MAX_KIB_RATIO)}; connect + authenticate >= {MIN_RATE_RATIO:g}x "
              f"bare: {chat['rate_ratio']:.2f}x, {target_verdict(chat['rate_ratio'] >= MIN_RATE_RATIO)}")
    save_json(args.json, args, summary, runs)
    return 0 if all("error" not in r for r in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
