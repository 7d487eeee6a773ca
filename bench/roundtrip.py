"""The `send-message` round trip under load (issue #8), beside a bare Tornado echo.

    .venv/bin/python bench/roundtrip.py                        # bare echo, Node echo, then vachat on SQLite
    .venv/bin/python bench/roundtrip.py --clients 1            # one client: latency with no queueing (issue #19)
    .venv/bin/python bench/roundtrip.py --database postgresql  # vachat on a fresh PostgreSQL database
    .venv/bin/python bench/roundtrip.py --rounds 3             # alternate, keep each one's best run

64 clients, each signed in as its own account, joined to its own conversation; each sends a
message and sends the next when the previous one's ack arrives (the ack comes once the row is
committed; the message's `new-message` broadcast reaches the sender too). After a warm-up,
`--duration` seconds are measured: latency p50/p99 and persisted messages/s (acks/s); on
PostgreSQL also the CPU of its processes (they share the two cores): the backends serving the
run's database, and all of them. Then the clients stop, every ack still due is awaited, and the rows in the messages table are counted:
they must equal the acks received. The bare reference answers `bench-echo` with an `ack` at
once (bench/bare_server.py); the Node reference (`node`: loadgen/ws_server.js, Node + `ws`)
answers it the same way, to show how far below bare Tornado the floor is. Every target's
ratio is to bare Tornado's figure from the same invocation. Server on CPU 0, the Node
generator (loadgen/roundtrip.js) on CPU 1.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import chat_stack
from bench.harness import (
    BENCH, LOADGEN, LOADGEN_CPU, SERVER_CPU, add_run_args, check_alive, ensure_loadgen, fmt_num, free_port,
    generator_result, machine_line, new_parser, print_table, raise_nofile, run_generator, run_targets, save_json,
    start_bare_server, start_server, stop, target_verdict,
)

# Issue #8's targets, against the bare echo measured in the same run.
DEFAULT_CLIENTS = 64


def targets(database: str, clients: int) -> tuple[Optional[int], float, float]:
    """(persisted messages/s at least, or None; p50 and p99 ratios to bare at most) for a run.
    64 clients on SQLite: issue #8 (2,000 msgs/s, p50 3x, p99 5x); on PostgreSQL: issue #19
    (3,000 msgs/s, 5x, 5x); one client, either database: issue #19 (latency only, 3x, 5x)."""
    if clients != DEFAULT_CLIENTS:
        return None, 3.0, 5.0
    return (2000, 3.0, 5.0) if database == "sqlite" else (3000, 5.0, 5.0)


def generator_config(args, port: int, server_pid: int) -> dict:
    return dict(url=f"ws://127.0.0.1:{port}/ws", clients=args.clients, padBytes=args.pad, warmupS=args.warmup,
                durationS=args.duration, serverPid=server_pid, clkTck=os.sysconf("SC_CLK_TCK"),
                serverCpu=SERVER_CPU, generatorCpu=LOADGEN_CPU)


def drive(node: str, cfg: dict, args) -> dict:
    return generator_result(run_generator([node, str(LOADGEN / "roundtrip.js"), json.dumps(cfg)],
                                          args.duration + args.warmup + 180))


def run_bare(node: str, args) -> dict:
    server, port = start_bare_server()
    try:
        return drive(node, generator_config(args, port, server.pid), args)
    finally:
        stop(server)


def run_node(node: str, args) -> dict:
    """The Node + `ws` echo (loadgen/ws_server.js), pinned to the server's core like the others."""
    port = free_port()
    server = start_server([node, str(BENCH / "loadgen" / "ws_server.js"), "--port", str(port)], {}, port)
    try:
        return drive(node, generator_config(args, port, server.pid), args)
    finally:
        stop(server)


def run_vachat(node: str, args) -> dict:
    with chat_stack.running_vachat(args.database, "roundtrip") as (server, api, db):
        users = api.sign_up(args.clients, f"rt{api.port}-")
        conversations = [api.create_conversation(u["token"], f"Room {n}") for n, u in enumerate(users)]
        cfg = generator_config(args, api.port, server.pid)
        if args.database == "postgresql":
            cfg["postgresDatabase"] = db.name  # its backends' CPU over the measured interval
        cfg.update(
            headers={"Authorization": "Bearer ${token}"},  # client i is account i
            joinFrames=['{"type":"join-conversation","id":"j${i}","data":{"conversationId":"${cid}"}}'],
            joinReplies=2,  # ready + the join's ack
            frame='{"type":"send-message","id":"${id}","data":{"conversationId":"${cid}","content":"${pad}"}}',
            vars={"token": [u["token"] for u in users], "cid": conversations},
        )
        result = drive(node, cfg, args)
        check_alive(server)
        result["rows_stored"] = db.count_messages()
        result["database"] = args.database
        return result


def _postgres_cpu(r: dict) -> str:
    """PostgreSQL's CPU over the measured interval (vachat on PostgreSQL only): its backends
    serving the benchmark's database / all its processes, % of one core."""
    if r.get("postgres_backends_cpu_pct") is None:
        return "-"
    return f"{fmt_num(r['postgres_backends_cpu_pct'], '.0f')} / {fmt_num(r.get('postgres_all_cpu_pct'), '.0f')}"


def _per_message_us(r: dict, key: str) -> str:
    """µs of CPU per persisted message from a CPU % of one core."""
    if r.get(key) is None or not r.get("acks_per_s"):
        return "-"
    return fmt_num(r[key] / 100 / r["acks_per_s"] * 1e6, ",.0f")


def main() -> int:
    ap = new_parser("roundtrip", __doc__)
    chat_stack.add_database_arg(ap)
    ap.add_argument("--clients", type=int, default=DEFAULT_CLIENTS)
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    ap.add_argument("--pad", type=int, default=48, help="bytes of message content")
    ap.add_argument("--targets", default="bare,node,vachat",
                    help="comma-separated, among bare, node, vachat (bare is always run: it is the reference)")
    add_run_args(ap)
    args = ap.parse_args()

    raise_nofile(args.clients * 4 + 1024)
    node = ensure_loadgen()
    runners = {"bare": lambda: run_bare(node, args), "node": lambda: run_node(node, args),
               "vachat": lambda: run_vachat(node, args)}
    wanted = {"bare"} | {t.strip() for t in args.targets.split(",") if t.strip()}
    unknown = wanted - set(runners)
    if unknown:
        ap.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    outcome = run_targets({name: run for name, run in runners.items() if name in wanted}, args, "acks_per_s")
    if outcome is None:
        return 130
    summary, runs = outcome
    bare, chat = summary["bare"], summary.get("vachat", {"error": "not run"})
    label = {"bare": "bare Tornado echo", "node": "Node ws echo",
             "vachat": f"vachat send-message ({args.database})"}
    ratio = lambda r, q: (r["latency_ms"][q] / bare["latency_ms"][q]
                          if "error" not in r and "error" not in bare and bare["latency_ms"][q] else None)
    rows = []
    for name, r in summary.items():
        if "error" in r:
            rows.append([label[name], "error: " + r["error"][:80]] + [""] * 9)
            continue
        rows.append([label[name], fmt_num(r["acks_per_s"], ",d"), fmt_num(r["latency_ms"]["p50"], ".2f"),
                     fmt_num(r["latency_ms"]["p99"], ".2f"), fmt_num(ratio(r, "p50"), ".2f"),
                     fmt_num(ratio(r, "p99"), ".2f"), fmt_num(r["server_cpu_pct"], ".0f"),
                     fmt_num(r["generator_cpu_pct"], ".0f"), _postgres_cpu(r),
                     fmt_num(r.get("other_cpu_pct_server_core"), ".0f") + " / "
                     + fmt_num(r.get("other_cpu_pct_generator_core"), ".0f"),
                     f"{r.get('rows_stored', '-')} / {r['acks_total']}"])
    print(f"\nsend-message round trip: {args.clients} clients, {args.duration:g}s measured after {args.warmup:g}s, "
          f"{args.rounds} round(s); {machine_line()}")
    print_table(["target", "msgs/s (acks)", "p50 ms", "p99 ms", "p50 ratio", "p99 ratio", "server CPU %",
                 "generator CPU %", "postgres CPU % (backends / all)", "other load % (srv/gen core)",
                 "rows stored / acks"], rows)
    if "vachat" in summary and "error" not in chat and "error" not in bare:
        stored_ok = chat["rows_stored"] == chat["acks_total"]
        print(f"rows in the messages table: {chat['rows_stored']}, acks received: {chat['acks_total']} "
              f"({'equal' if stored_ok else 'DIFFERENT'}); error replies: {chat['errors']}, "
              f"replies missing: {chat['replies_missing']}")
        min_rate, p50_max, p99_max = targets(args.database, args.clients)
        p50, p99 = ratio(chat, "p50"), ratio(chat, "p99")
        print(f"target p50 <= {p50_max:g}x bare: {p50:.2f}x, {target_verdict(p50 <= p50_max)}; "
              f"p99 <= {p99_max:g}x bare: {p99:.2f}x, {target_verdict(p99 <= p99_max)}")
        if args.database == "postgresql":
            backends, everything = chat.get("postgres_backends_cpu_pct"), chat.get("postgres_all_cpu_pct")
            print(f"PostgreSQL CPU over the measured interval, % of one core: {fmt_num(backends, '.0f')} in the "
                  f"backends serving the benchmark's database, {fmt_num(everything, '.0f')} in all its processes "
                  f"(with the WAL writer, and whatever else uses this server); server {chat['server_cpu_pct']:.0f}, "
                  f"two cores = 200; per message: server {_per_message_us(chat, 'server_cpu_pct')} µs, "
                  f"backends {_per_message_us(chat, 'postgres_backends_cpu_pct')} µs of CPU")
        print(f"persisted messages/s: {chat['acks_per_s']:,}"
              + (f" (target >= {min_rate:,}: {target_verdict(chat['acks_per_s'] >= min_rate)})" if min_rate
                 else f" (the throughput targets are for {DEFAULT_CLIENTS} clients)"))
    save_json(args.json, args, summary, runs)
    ok = all("error" not in r for r in summary.values()) and ("vachat" not in summary
                                                              or chat.get("rows_stored") == chat.get("acks_total"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
