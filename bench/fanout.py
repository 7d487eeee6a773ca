"""WebSocket fan-out benchmark: one message to 1,000 sockets in a room.

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

import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import chat_stack
from bench.harness import (
    BENCH, LOADGEN, LOADGEN_CPU, REPO, SERVER_CPU, add_run_args, best_of, check_alive, ensure_loadgen, fmt_num,
    free_port, generator_result, log, machine_line, median, new_parser, print_table, raise_nofile, run_generator,
    run_targets, save_json, start_server, stop,
)


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
    trigger_headers: Optional[dict[str, str]] = None  # upgrade headers of the trigger sockets (default: headers)
    trigger_join_frames: list[str] = field(default_factory=list)  # each trigger socket, after connecting
    trigger_join_replies: int = 0         # frames each trigger socket gets before measuring
    trigger_frame: str = ""               # one broadcast; its `"seq":${seq}` must reach every socket
    vars: dict[str, str] = field(default_factory=dict)
    setup: Optional[Callable[..., dict]] = None  # setup(port, db) once the port accepts; returns more vars
    teardown: Optional[Callable[..., dict]] = None  # teardown(port, db) after the generator; adds to the result
    database: Optional[str] = None        # "sqlite" / "postgresql": a fresh database per run, {database_url}
    pad: Optional[int] = None             # filler bytes for this target (default: --pad)
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
         **chat_stack.LIFTED_LIMITS, "WS_PING_INTERVAL": "3600", "WS_PING_TIMEOUT": "3600"},
    headers={"Authorization": "Bearer test:u${i}"},
    join_frames=['{"type":"bench-join","id":"j${i}"}'],
    join_replies=2,  # ready + the join's ack
    trigger_join_replies=1,  # ready
    trigger_frame='{"type":"bench-broadcast","id":"b${seq}","data":' + TRIGGER_DATA + '}',
)

# ---------------------------------------------------------------------------------------------
# The full chat path (issue #8): 1,000 sockets of users reading one public conversation
# (CHAT_READERS accounts, a few tabs each) joined with `join-conversation`; the owner's two
# trigger sockets send `send-message` (stored, acked, then `new-message` to the room). The
# sequence number travels in the message's metadata, so the frame carries `"seq":N`.
CHAT_READERS = 200
FANOUT_TARGET_RATIO = 2.5
# Filler for the bare reference of vachat-chat, so that its frames are as long as a
# `new-message` frame with 48 bytes of content (its ids, timestamps and fields): ~445 bytes.
CHAT_FRAME_PAD = 387

targets["bare-chat"] = Target(
    name="bare-chat", cmd=targets["bare"].cmd, join_frames=targets["bare"].join_frames,
    trigger_frame=targets["bare"].trigger_frame, pad=CHAT_FRAME_PAD)
REFERENCE_ONLY = {"bare", "bare-chat"}


def _chat_fanout_setup(port: int, db) -> dict:
    api = chat_stack.Api(port)
    owner = api.sign_up(1, f"owner{port}-")[0]
    readers = api.sign_up(CHAT_READERS, f"reader{port}-")
    conversation_id = api.create_conversation(owner["token"], "Town hall", public=True)
    return {"owner": owner["token"], "reader": [r["token"] for r in readers], "cid": conversation_id}


def _chat_fanout_teardown(port: int, db) -> dict:
    return {"messages_stored": db.count_messages()}


def chat_fanout_target(database: str) -> Target:
    return Target(
        name="vachat-chat",
        cmd=chat_stack.server_cmd(),
        env=chat_stack.server_env("{port}", "{database_url}"),
        database=database,
        setup=_chat_fanout_setup,
        teardown=_chat_fanout_teardown,
        ready_timeout_s=60.0,
        headers={"Authorization": "Bearer ${reader}"},  # reader tokens in turn: socket i uses reader i % 200
        join_frames=['{"type":"join-conversation","id":"j${i}","data":{"conversationId":"${cid}"}}'],
        join_replies=2,  # ready + the join's ack
        trigger_headers={"Authorization": "Bearer ${owner}"},
        trigger_join_replies=1,  # ready
        trigger_frame='{"type":"send-message","id":"b${seq}","data":{"conversationId":"${cid}",'
                      '"content":"${pad}","metadata":{"seq":${seq}}}}',
    )


targets["vachat-chat"] = chat_fanout_target("sqlite")
# ---------------------------------------------------------------------------------------------


def run_target(t: Target, node: str, args) -> dict:
    port = free_port()
    db = chat_stack.BenchDatabase(t.database, f"fanout-{port}") if t.database else None
    try:
        return _run_target(t, node, args, port, db)
    finally:
        if db:
            db.drop()


def _run_target(t: Target, node: str, args, port: int, db: Optional[chat_stack.BenchDatabase]) -> dict:
    fmt = dict(python=sys.executable, node=node, port=port, repo=str(REPO), bench=str(BENCH),
               database_url=db.url if db else "")
    env = {k: v.format(**fmt) for k, v in t.env.items()}
    server = start_server([c.format(**fmt) for c in t.cmd], env, port, cwd=t.cwd.format(**fmt),
                          ready_timeout=t.ready_timeout_s)
    try:
        extra_vars = dict(t.vars)
        if t.setup:
            extra_vars.update(t.setup(port, db) or {})
        cfg = dict(
            url=t.url.format(**fmt), clients=args.clients, headers=t.headers,
            joinFrames=t.join_frames, joinReplies=t.join_replies, triggerHeaders=t.trigger_headers,
            triggerJoinFrames=t.trigger_join_frames, triggerJoinReplies=t.trigger_join_replies,
            triggerFrame=t.trigger_frame, vars=extra_vars, padBytes=t.pad if t.pad is not None else args.pad,
            broadcasts=args.broadcasts, warmup=args.warmup, durationS=args.duration,
            window=args.window, serverPid=server.pid, clkTck=os.sysconf("SC_CLK_TCK"),
            serverCpu=SERVER_CPU, generatorCpu=LOADGEN_CPU, client=args.client,
        )
        if db is not None and db.kind == "postgresql":
            cfg["postgresDatabase"] = db.name  # PostgreSQL's CPU over the measured interval too
        log(f"[{t.name}] load generator on CPU {LOADGEN_CPU}: {args.clients} sockets, "
            f"{args.broadcasts} broadcasts or {args.duration}s")
        res = generator_result(run_generator([node, str(LOADGEN / "fanout.js"), json.dumps(cfg)], args.duration + 180))
        check_alive(server)
        if not res.get("broadcasts_measured"):
            raise RuntimeError(f"no measured broadcast completed ({res.get('reason')})")
        if t.teardown:
            res.update(t.teardown(port, db) or {})
        return res
    finally:
        stop(server)


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per target: its best run, the spread over rounds, and best ÷ bare's best."""
    out = {}
    for name, rs in runs.items():
        out[name] = best_of(rs, "frames_per_s")
        if "error" not in out[name]:
            out[name]["frames_per_s_median"] = median([r["frames_per_s"] for r in rs if r.get("frames_per_s")])
    for name, r in out.items():
        bare = out.get(reference_of(name), {}).get("frames_per_s")
        if "error" not in r:
            r["ratio_vs_bare"] = r["frames_per_s"] / bare if bare else None
    return out


def reference_of(name: str) -> str:
    """The bare run a target is compared with: the one sending frames of its size."""
    if name in REFERENCE_ONLY:
        return name
    return "bare-chat" if name == "vachat-chat" else "bare"


def print_summary(summary: dict[str, dict]) -> None:
    hdr = ["target", "frames/s", "frame bytes", "p50 ms", "p99 ms", "server CPU %", "generator CPU %",
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
        ratio = fmt_num(r["ratio_vs_bare"], ".2f")
        if name != reference_of(name):
            ratio += f" (vs {reference_of(name)})"
        rows.append([name, fps, fmt_num(r.get("frame_bytes"), "d"), fmt_num(r["latency_ms"]["p50"], ".1f"),
                     fmt_num(r["latency_ms"]["p99"], ".1f"), fmt_num(r["server_cpu_pct"], ".0f"), gen, other, ratio])
    print_table(hdr, rows)


def main() -> int:
    ap = new_parser("fanout", __doc__)
    available = [n for n, t in targets.items() if t is not None]
    ap.add_argument("--targets", default=",".join(n for n in available if n not in REFERENCE_ONLY),
                    help=f"comma list of {','.join(available)}; each one's bare reference always runs, first, for the ratio")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--broadcasts", type=int, default=200, help="measured broadcasts (after warm-up)")
    ap.add_argument("--duration", type=float, default=20.0, help="max measured seconds")
    ap.add_argument("--warmup", type=int, default=10, help="unmeasured broadcasts first")
    ap.add_argument("--window", type=int, default=2,
                    help="broadcasts in flight, each triggered over its own trigger socket")
    ap.add_argument("--client", choices=("raw", "ws"), default="raw",
                    help="generator's WebSocket client: lean hand-rolled frame counter, or the ws library")
    ap.add_argument("--pad", type=int, default=48, help="filler bytes in each message (~100-byte frame)")
    chat_stack.add_database_arg(ap)
    add_run_args(ap)
    args = ap.parse_args()

    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    for n in names:
        if n not in targets:
            ap.error(f"unknown target {n!r}; known: {', '.join(targets)}")
        if targets[n] is None:
            ap.error(f"target {n!r} is not wired yet (TODO slot in bench/fanout.py)")
    wanted_references = {reference_of(n) for n in names} | {"bare"}
    for reference in sorted(wanted_references, reverse=True):
        if reference in names:
            names.remove(reference)
        names.insert(0, reference)
    if "vachat-chat" in names:
        targets["vachat-chat"] = chat_fanout_target(args.database)

    raise_nofile(args.clients * 2 + 1024)
    node = ensure_loadgen()

    def run_one(name: str) -> dict:
        r = run_target(targets[name], node, args)
        if r["seq_errors_socket0"] or r["extra_frames"] or r["broadcasts_incomplete"]:
            log(f"[{name}] WARNING: seq_errors={r['seq_errors_socket0']} extra_frames={r['extra_frames']} "
                f"incomplete={r['broadcasts_incomplete']} (frames missing {r['frames_missing']})")
        return r

    outcome = run_targets({name: functools.partial(run_one, name) for name in names}, args, "frames_per_s")
    if outcome is None:
        return 130
    runs = outcome[1]
    summary = summarize(runs)
    nodev = subprocess.run([node, "-v"], capture_output=True, text=True).stdout.strip()
    print(f"\nfan-out: {args.clients} sockets, window {args.window}, {args.client} client, "
          f"{args.rounds} round(s); {machine_line()}, node {nodev}")
    print_summary(summary)
    if args.rounds > 1:
        print("(each target's best of its rounds; p50/p99/CPU columns are from that run)")
    chat = summary.get("vachat-chat")
    if chat and "error" not in chat and chat.get("ratio_vs_bare") is not None:
        small = summary.get("bare", {}).get("frames_per_s")
        print(f"target (issue #8): fan-out through the chat path >= {FANOUT_TARGET_RATIO}x the bare broadcast: "
              f"{chat['ratio_vs_bare']:.2f}x the bare broadcast of frames as long "
              f"({'met' if chat['ratio_vs_bare'] >= FANOUT_TARGET_RATIO else 'NOT met'})"
              + (f", {chat['frames_per_s'] / small:.2f}x the ~106-byte one" if small else "")
              + f"; {chat.get('messages_stored', '?')} messages stored for {chat.get('broadcasts_sent', '?')} sent")
    if chat and chat.get("postgres_backends_cpu_pct") is not None:
        print(f"PostgreSQL CPU over the measured interval, % of one core: {chat['postgres_backends_cpu_pct']:.0f} in the "
              f"backends serving the run's database, {chat['postgres_all_cpu_pct']:.0f} in all its processes")
    if chat and "error" not in chat:
        print(f"(window {args.window}: at most {args.window} broadcasts in flight, and each trigger is sent only once "
              "the previous broadcast has started arriving, so at most one message is being stored at a time while "
              "the one before it is fanned out; --window 1 stores and fans out strictly one after the other)")
    save_json(args.json, args, summary, runs)
    return 0 if all("error" not in r for r in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
