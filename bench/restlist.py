"""Authenticated conversation list (issues #8 and #19): requests/s of
`GET /api/chat/conversations?limit=20` with a real Bearer access token, beside a bare Tornado
JSON handler answering a similar 20-item body (bench/bare_server.py, `/api/bench/items`) and
the same handler written with Node's `http` (bench/loadgen/http_server.js), all in one run.

    .venv/bin/python bench/restlist.py                # bare, node, then vachat on SQLite
    .venv/bin/python bench/restlist.py --rounds 3     # alternate, keep each one's best run
    .venv/bin/python bench/restlist.py --targets bare,vachat   # without Node

Every ratio is to the bare Tornado handler. "requests per server CPU-s" divides the figure by
the share of a core the server used: on a shared machine, where other processes take part of
the server's core, it stays comparable between runs when requests/s does not (it assumes the
server was the bottleneck, as it is when wrk's core is not saturated).

The client is `wrk` (Debian's package: `apt-get install -y wrk`), 1 thread and 64 keep-alive
connections, pinned to CPU 1; the server is pinned to CPU 0. Each target gets an unmeasured
`--warmup` run first. The signed-in account owns 20 conversations, each with a message (so
every item carries its last message, as a client's list does).
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import chat_stack
from bench.harness import (
    LOADGEN, CpuMeter, add_run_args, check_alive, fmt_num, free_port, log, machine_line, new_parser, print_table,
    raise_nofile, run_generator, run_targets, save_json, start_bare_server, start_server, stop, target_verdict,
)

LIST_PATH = "/api/chat/conversations?limit=20"
BARE_PATH = "/api/bench/items"
MIN_RATIO = 0.8  # issue #19 (target 5): the list at >= 0.8x the bare handler's requests/s (#8: 0.5x)
ITEMS = 20


def wrk(url: str, seconds: float, args, token: str | None = None) -> dict:
    """Run wrk once (pinned to the generator's core); its figures."""
    cmd = [args.wrk, "-t1", f"-c{args.connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    out = run_generator(cmd + [url], seconds + 60)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise RuntimeError(f"wrk printed no figure: {out[-500:]!r}")
    latency = {q: _ms(m.group(1), m.group(2)) for q, m in
               ((q, re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\b", out, re.M)) for q in ("50", "99")) if m}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    requests = re.search(r"(\d+) requests in", out)
    return {"requests_per_s": round(float(rps.group(1))), "latency_ms": {"p50": latency.get("50"), "p99": latency.get("99")},
            "requests": int(requests.group(1)) if requests else None, "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else None}


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def measure(server, url: str, args, token: str | None = None) -> dict:
    wrk(url, args.warmup, args, token)
    meter = CpuMeter(server.pid)  # the generator: wrk, reaped within the interval
    meter.start()
    result = wrk(url, args.duration, args, token)
    result.update(meter.stop())
    check_alive(server)
    if result["non_2xx"]:
        raise RuntimeError(f"{result['non_2xx']} answers were not 2xx")
    return result


def run_bare(args) -> dict:
    server, port = start_bare_server()
    return _measure_reference(server, port, args)


def run_node(args) -> dict:
    """The same JSON GET as the bare reference, served by Node's `http` (no npm dependency)."""
    port = free_port()
    server = start_server([args.node, str(LOADGEN / "http_server.js"), "--port", str(port)], {}, port, cwd=LOADGEN)
    return _measure_reference(server, port, args)


def _measure_reference(server, port: int, args) -> dict:
    """wrk against a reference server's JSON GET, and its body's size; the server stopped after."""
    try:
        result = measure(server, f"http://127.0.0.1:{port}{BARE_PATH}", args)
        result["body_bytes"] = len(chat_stack.Api(port).raw("GET", BARE_PATH))
        return result
    finally:
        stop(server)


def run_vachat(args) -> dict:
    with chat_stack.running_vachat(args.database, "restlist") as (server, api, db):
        token = api.sign_up(1, f"list{api.port}-")[0]["token"]
        for n in range(ITEMS):
            conversation_id = api.create_conversation(token, f"Conversation {n}")
            api.send_message(token, conversation_id, f"Hello number {n}")
        listed = api.call("GET", LIST_PATH, token=token)
        if len(listed) != ITEMS or not all(item["lastMessage"] for item in listed):
            raise RuntimeError(f"the list has {len(listed)} items, expected {ITEMS} with their last message")
        result = measure(server, f"{api.base}{LIST_PATH}", args, token)
        result["body_bytes"] = len(api.raw("GET", LIST_PATH, token=token))
        result["database"] = args.database
        return result


def main() -> int:
    ap = new_parser("restlist", __doc__)
    chat_stack.add_database_arg(ap)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    ap.add_argument("--targets", default="bare,node,vachat",
                    help="comma-separated, from bare, node, vachat (bare is always run: every ratio is to it)")
    add_run_args(ap)
    args = ap.parse_args()
    args.wrk = shutil.which("wrk")
    if not args.wrk:
        raise SystemExit("restlist: wrk is required (Debian: apt-get install -y wrk)")
    targets = ["bare"] + [t for t in args.targets.split(",") if t and t != "bare"]
    args.node = shutil.which("node")
    if "node" in targets and not args.node:
        log("node not found: the Node reference is skipped")
        targets.remove("node")
    runners = {"bare": lambda: run_bare(args), "node": lambda: run_node(args), "vachat": lambda: run_vachat(args)}
    unknown = set(targets) - set(runners)
    if unknown:
        raise SystemExit(f"restlist: unknown targets {sorted(unknown)}")

    raise_nofile(args.connections * 4 + 1024)
    outcome = run_targets({name: runners[name] for name in targets}, args, "requests_per_s")
    if outcome is None:
        return 130
    summary, runs = outcome
    bare, chat = summary["bare"], summary.get("vachat", {"error": "not run"})
    label = {"bare": f"bare Tornado JSON ({BARE_PATH})", "node": f"Node http JSON ({BARE_PATH})",
             "vachat": f"vachat {LIST_PATH} ({args.database})"}
    rows = []
    for name, r in summary.items():
        if "error" in r:
            rows.append([label[name], "error: " + r["error"][:80]] + [""] * 9)
            continue
        ratio = r["requests_per_s"] / bare["requests_per_s"] if "error" not in bare else None
        per_cpu = r["requests_per_s"] / (r["server_cpu_pct"] / 100) if r.get("server_cpu_pct") else None
        bare_per_cpu = (bare["requests_per_s"] / (bare["server_cpu_pct"] / 100)
                        if "error" not in bare and bare.get("server_cpu_pct") else None)
        rows.append([label[name], fmt_num(r["requests_per_s"], ",d"), fmt_num(r["latency_ms"]["p50"], ".2f"),
                     fmt_num(r["latency_ms"]["p99"], ".2f"), r["body_bytes"], fmt_num(r["server_cpu_pct"], ".0f"),
                     fmt_num(r["generator_cpu_pct"], ".0f"),
                     fmt_num(r["other_cpu_pct_server_core"], ".0f") + " / " + fmt_num(r["other_cpu_pct_generator_core"], ".0f"),
                     fmt_num(ratio, ".2f"), fmt_num(per_cpu and round(per_cpu), ",d"),
                     fmt_num(per_cpu / bare_per_cpu if per_cpu and bare_per_cpu else None, ".2f")])
    print(f"\nconversation list: wrk, 1 thread, {args.connections} connections, {args.duration:g}s measured, "
          f"{args.rounds} round(s); {machine_line()}")
    print_table(["target", "requests/s", "p50 ms", "p99 ms", "body bytes", "server CPU %", "wrk CPU %",
                 "other load % (srv/gen core)", "ratio vs bare", "requests per server CPU-s", "ratio per CPU-s"], rows)
    if "error" not in chat and "error" not in bare:
        ratio = chat["requests_per_s"] / bare["requests_per_s"]
        print(f"target >= {MIN_RATIO:g}x the bare JSON handler: {ratio:.2f}x, {target_verdict(ratio >= MIN_RATIO)}")
    save_json(args.json, args, summary, runs)
    return 0 if all("error" not in r for r in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
