"""200 AI replies streaming at once from a fast OpenAI-compatible server (issue #19, target 7).

    .venv/bin/python bench/ai_stream.py                      # 200 replies x 100 deltas, a token every 5 ms
    .venv/bin/python bench/ai_stream.py --replies 50 --deltas 40 --token-interval-ms 2
    .venv/bin/python bench/ai_stream.py --loop-check         # then once more, counting slow callbacks

Three processes: the full vachat server (bench/chat_stack.py, every plugin, SQLite) on CPU 0,
with `AI_PROVIDER=openai` pointed at a fake OpenAI-compatible server (this script in `--fake`
mode) on CPU 1, and the clients (this script in `--generator` mode) on CPU 1. The fake streams
each reply as the public chat-completions SSE format does (a role chunk, one chunk per token,
a finish chunk, a usage chunk, `[DONE]`), one token per reply every `--token-interval-ms`
(all replies' tokens written on one timer), `--deltas` tokens per reply. Each token's text is
`|<send time>` (epoch seconds, the fake's clock, which is the clients' clock: one machine).

200 accounts each own a conversation and have a WebSocket joined to it. Every socket then
sends `send-message` with `requiresAIResponse` at once, and reads its reply: `ai-delta` frames
(README: a fast provider's pieces are coalesced into at most 20 frames a second per reply),
`ai-done`, the stored reply as `new-message`, `ai-typing` off. Measured from the trigger to
the last reply's end:

- the server's CPU seconds per 1,000 provider deltas (tokens the fake sent) and per 1,000
  `ai-delta` frames delivered;
- delta latency: for each frame, receipt time less the send time of its first (oldest) piece;
  p50/p99 over every frame;
- checks: every reply ends with `ai-done` (`stop`), carries every token in order, its frames
  come at most 20 in any second (+1: the last coalesced piece goes out as the stream ends,
  before `ai-done`, without waiting out the interval), and the stored row's content equals the
  concatenated deltas (read from the database afterwards).

No bare reference: the figures are absolute (CPU per delta) and compared between runs of one
machine. AI quotas are off (no `AI_DAILY_TOKENS`, the default) and the user-protecting limits
are lifted through the server's environment, as in every chat benchmark.
"""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import chat_stack
from bench.harness import (
    LOADGEN_CPU, CpuMeter, add_run_args, check_alive, fmt_num, free_port, generator_result, log, machine_line,
    new_parser, percentile, print_table, raise_nofile, run_generator, run_targets, save_json, spawn, stop,
    target_verdict, wait_port,
)

MAX_FRAMES_PER_S = 20  # README: at most 20 ai-delta frames a second per reply
CONNECT_CONCURRENCY = 50


# -- the fake provider (a separate process on the generator's core) ----------------------------


class FakeStream:
    """One reply being streamed: an HTTP/1.1 response with chunked encoding, SSE inside."""

    def __init__(self, writer: asyncio.StreamWriter, request: dict, tokens: int, number: int) -> None:
        self.writer, self.left, self.tokens = writer, tokens, tokens
        self.model = request.get("model", "fake")
        self.usage = bool((request.get("stream_options") or {}).get("include_usage"))
        self.head = (f'data: {{"id":"chatcmpl-{number}","object":"chat.completion.chunk","created":{int(time.time())},'
                     f'"model":{json.dumps(self.model)},"choices":')
        self.done = asyncio.get_running_loop().create_future()

    def event(self, body: str) -> None:
        data = (body + "\n\n").encode()
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))

    def chunk(self, choices: str, extra: str = "") -> None:
        self.event(f"{self.head}{choices}{extra}}}")

    def start(self) -> None:
        self.writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n")
        self.chunk('[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]')

    def next_token(self) -> None:
        self.chunk('[{"index":0,"delta":{"content":"|%.6f"},"finish_reason":null}]' % time.time())
        self.left -= 1
        if self.left == 0:
            self.chunk('[{"index":0,"delta":{},"finish_reason":"stop"}]')
            if self.usage:
                self.chunk("[]", ',"usage":{"prompt_tokens":10,"completion_tokens":%d,"total_tokens":%d}'
                           % (self.tokens, self.tokens + 10))
            self.event("data: [DONE]")
            self.writer.write(b"0\r\n\r\n")
            self.done.set_result(None)


class FakeProvider:
    """Every stream's next token on one timer, so 200 replies cost one wake-up per interval."""

    def __init__(self, tokens: int, interval: float) -> None:
        self.tokens, self.interval = tokens, interval
        self.streams: list[FakeStream] = []
        self.requests = 0
        self._wake = asyncio.Event()

    async def ticker(self) -> None:
        while True:
            if not self.streams:
                self._wake.clear()
                await self._wake.wait()
            next_at = time.monotonic() + self.interval
            for stream in list(self.streams):
                stream.next_token()
                if stream.left == 0:
                    self.streams.remove(stream)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: the provider's client reuses connections
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                request = json.loads(await reader.readexactly(length)) if length else {}
                self.requests += 1
                stream = FakeStream(writer, request, self.tokens, self.requests)
                stream.start()
                self.streams.append(stream)
                self._wake.set()
                await stream.done
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def fake_main(port: int, tokens: int, interval: float) -> int:
    async def run() -> None:
        fake = FakeProvider(tokens, interval)
        server = await asyncio.start_server(fake.serve, "127.0.0.1", port, backlog=1024)
        ticker = asyncio.ensure_future(fake.ticker())
        async with server:
            await server.serve_forever()
        ticker.cancel()

    asyncio.run(run())
    return 0


# -- the clients (a separate process on the generator's core) ----------------------------------


class Reply:
    """What one socket saw of its conversation's reply."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, int, str]] = []  # (receipt time, index, delta)
        self.message_id: str | None = None
        self.finish_reason: str | None = None
        self.stored: str | None = None
        self.ended = asyncio.get_running_loop().create_future()


async def _open(url: str, token: str, conversation_id: str) -> Any:
    import tornado.httpclient
    import tornado.websocket

    socket = await tornado.websocket.websocket_connect(
        tornado.httpclient.HTTPRequest(url, headers={"Authorization": f"Bearer {token}"}), max_message_size=1 << 22)
    socket.write_message(json.dumps({"type": "join-conversation", "id": "join",
                                     "data": {"conversationId": conversation_id}}))
    while True:
        message = await socket.read_message()
        if message is None:
            raise RuntimeError("the server closed a socket while joining")
        frame = json.loads(message)
        if frame.get("type") == "ack" and frame.get("id") == "join":
            return socket
        if frame.get("type") == "error":
            raise RuntimeError(f"join refused: {frame}")


async def _read(socket: Any, reply: Reply) -> None:
    import orjson

    while True:
        message = await socket.read_message()
        received = time.time()
        if message is None:
            if not reply.ended.done():
                reply.ended.set_exception(RuntimeError("the server closed a socket mid-reply"))
            return
        frame = orjson.loads(message)
        kind, data = frame.get("type"), frame.get("data") or {}
        if kind == "ai-delta":
            reply.frames.append((received, data["index"], data["delta"]))
            reply.message_id = data["messageId"]
        elif kind == "ai-done":
            reply.finish_reason = data.get("finishReason")
            reply.message_id = data.get("messageId", reply.message_id)
        elif kind == "new-message" and data.get("role") == "assistant":
            reply.stored = data.get("content")
        elif kind == "ai-typing" and data.get("typing") is False and not reply.ended.done():
            reply.ended.set_result(None)
        elif kind == "error" and not reply.ended.done():
            reply.ended.set_exception(RuntimeError(f"error frame: {str(frame)[:300]}"))


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def generate(cfg: dict) -> dict:
    semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one(i: int) -> Any:
        async with semaphore:
            return await _open(cfg["url"], cfg["tokens"][i], cfg["conversations"][i])

    sockets = await asyncio.gather(*(open_one(i) for i in range(len(cfg["conversations"]))))
    replies = [Reply() for _ in sockets]
    readers = [asyncio.ensure_future(_read(s, r)) for s, r in zip(sockets, replies)]
    meter = CpuMeter(cfg["serverPid"], os.getpid())
    server_ticks0 = _ticks(cfg["serverPid"])
    meter.start()
    started = time.time()
    for i, socket in enumerate(sockets):
        socket.write_message(json.dumps({"type": "send-message", "id": f"ask{i}", "data": {
            "conversationId": cfg["conversations"][i], "content": "Tell me something", "requiresAIResponse": True}}))
    try:
        done, pending = await asyncio.wait([r.ended for r in replies], timeout=cfg["timeout"])
    finally:
        elapsed = time.time() - started
        cpu = meter.stop()
        server_cpu_s = (_ticks(cfg["serverPid"]) - server_ticks0) / os.sysconf("SC_CLK_TCK")
        for reader in readers:
            reader.cancel()
        for socket in sockets:
            socket.close()
    failures = [str(r.ended.exception())[:200] for r in replies if r.ended.done() and r.ended.exception()]
    latencies, frames, pieces, window_max, bad_order, texts = [], 0, 0, 0, 0, {}
    for reply in replies:
        frames += len(reply.frames)
        text = "".join(delta for _, _, delta in reply.frames)
        stamps = text.split("|")[1:]
        pieces += len(stamps)
        if [index for _, index, _ in reply.frames] != list(range(1, len(reply.frames) + 1)) \
                and [index for _, index, _ in reply.frames] != list(range(len(reply.frames))):
            bad_order += 1
        if [float(s) for s in stamps] != sorted(float(s) for s in stamps) or len(stamps) != cfg["deltas"]:
            bad_order += 1
        for received, _, delta in reply.frames:
            latencies.append(received - float(delta.split("|")[1]))
        window_max = max(window_max, _max_in_window([t for t, _, _ in reply.frames]))
        if reply.message_id:
            texts[reply.message_id] = text
    latencies.sort()
    provider_deltas = cfg["deltas"] * len(replies)
    return {
        "replies": len(replies), "replies_ended": len(done) - len(failures), "replies_pending": len(pending),
        "failures": failures[:5], "finish_reasons": sorted({str(r.finish_reason) for r in replies}),
        "stored_equals_frames": sum(1 for r in replies if r.stored is not None
                                    and r.stored == "".join(d for _, _, d in r.frames)),
        "provider_deltas": provider_deltas, "pieces_received": pieces, "frames": frames,
        "replies_out_of_order_or_short": bad_order, "max_frames_in_1s": window_max,
        "elapsed_s": round(elapsed, 2), "server_cpu_s": round(server_cpu_s, 2),
        "server_cpu_ms_per_1k_deltas": round(1e6 * server_cpu_s / provider_deltas, 1) if provider_deltas else None,
        "server_cpu_ms_per_1k_frames": round(1e6 * server_cpu_s / frames, 1) if frames else None,
        "deltas_per_s": round(pieces / elapsed) if elapsed else None,
        "latency_ms": {"p50": _ms(percentile(latencies, 0.5)), "p99": _ms(percentile(latencies, 0.99)),
                       "max": _ms(percentile(latencies, 1.0))},
        **cpu, "texts": texts,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _ticks(pid: int) -> int:
    from bench.harness import process_ticks

    return process_ticks(pid)


def generator_main(cfg_json: str) -> int:
    cfg = json.loads(cfg_json)
    raise_nofile(len(cfg["conversations"]) + 1024)
    try:
        result = asyncio.run(generate(cfg))
    except Exception as error:  # reported to the driver as its result
        result = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(result), flush=True)
    return 0


# -- the driver --------------------------------------------------------------------------------


def stored_texts(db: chat_stack.BenchDatabase, ids: list[str]) -> dict[str, str]:
    with sqlite3.connect(db.path) as connection:
        return dict(connection.execute(
            f"SELECT id, content FROM chat_message WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall())


def run_vachat(args) -> dict:
    fake_port = free_port()
    fake = spawn([sys.executable, str(Path(__file__).resolve()), "--fake", str(fake_port), str(args.deltas),
                  str(args.token_interval_ms / 1000)], LOADGEN_CPU, stdin=subprocess.DEVNULL)
    try:
        wait_port(fake_port, fake, 30)
        env = {"AI_PROVIDER": "openai", "AI_BASE_URL": f"http://127.0.0.1:{fake_port}/v1", "AI_API_KEY": "sk-bench",
               "AI_MODEL": "fake", "AI_MAX_RETRIES": "0", "AI_TIMEOUT": "120", "AI_IDLE_TIMEOUT": "120"}
        with chat_stack.running_vachat("sqlite", "aistream", env=env) as (server, api, db):
            users = api.sign_up(args.replies, f"ai{api.port}-")
            conversations = [api.create_conversation(u["token"], f"AI {n}") for n, u in enumerate(users)]
            cfg = dict(url=f"ws://127.0.0.1:{api.port}/ws", tokens=[u["token"] for u in users],
                       conversations=conversations, deltas=args.deltas, timeout=args.timeout, serverPid=server.pid)
            log(f"generator: {args.replies} sockets, each asking for a reply of {args.deltas} tokens "
                f"{args.token_interval_ms:g} ms apart")
            result = generator_result(run_generator([sys.executable, str(Path(__file__).resolve()), "--generator",
                                                     json.dumps(cfg)], args.timeout + 300))
            check_alive(server)
            texts = result.pop("texts")
            stored = stored_texts(db, list(texts))
            result["stored_equals_deltas"] = sum(1 for i, t in texts.items() if stored.get(i) == t)
            return result
    finally:
        stop(fake)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--generator":
        return generator_main(sys.argv[2])
    if len(sys.argv) == 5 and sys.argv[1] == "--fake":
        return fake_main(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    ap = new_parser("ai_stream", __doc__)
    ap.add_argument("--replies", type=int, default=200, help="conversations, each with a socket and a reply")
    ap.add_argument("--deltas", type=int, default=100, help="tokens the fake streams per reply")
    ap.add_argument("--token-interval-ms", type=float, default=5.0, help="time between one reply's tokens")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds allowed for every reply to end")
    add_run_args(ap)
    args = ap.parse_args()

    raise_nofile(args.replies * 4 + 1024)
    outcome = run_targets({"vachat": lambda: run_vachat(args)}, args, "frames")
    if outcome is None:
        return 130
    summary, runs = outcome
    r = summary["vachat"]
    print(f"\nAI streaming: {args.replies} replies at once, {args.deltas} tokens each, "
          f"{args.token_interval_ms:g} ms apart (offered {args.replies * 1000 / args.token_interval_ms:,.0f} deltas/s), "
          f"{args.rounds} round(s); {machine_line()}")
    if "error" in r:
        print(f"error: {r['error']}")
        save_json(args.json, args, summary, runs)
        return 1
    print_table(["figure", "value"], [
        ["replies ended (ai-done, then ai-typing off)", f"{r['replies_ended']} / {r['replies']}"
         + (f" ({r['replies_pending']} pending, failures {r['failures']})" if r['replies_pending'] or r['failures'] else "")],
        ["finish reasons", ", ".join(r["finish_reasons"])],
        ["provider deltas sent / received in frames", f"{r['provider_deltas']:,} / {r['pieces_received']:,}"],
        ["ai-delta frames delivered", f"{r['frames']:,} ({r['frames'] / r['replies']:.1f} per reply)"],
        ["most frames of one reply in any 1 s", r["max_frames_in_1s"]],
        ["stored reply = concatenated deltas (database / new-message)",
         f"{r['stored_equals_deltas']} / {r['stored_equals_frames']} of {r['replies']}"],
        ["wall time, trigger to last reply's end", f"{r['elapsed_s']} s ({fmt_num(r['deltas_per_s'], ',d')} deltas/s)"],
        ["server CPU", f"{r['server_cpu_s']} s ({fmt_num(r['server_cpu_pct'], '.0f')} % of a core)"],
        ["server CPU per 1,000 provider deltas", f"{fmt_num(r['server_cpu_ms_per_1k_deltas'], '.1f')} ms"],
        ["server CPU per 1,000 ai-delta frames", f"{fmt_num(r['server_cpu_ms_per_1k_frames'], '.1f')} ms"],
        ["delta latency p50 / p99 / max (first piece of each frame)",
         f"{fmt_num(r['latency_ms']['p50'], '.1f')} / {fmt_num(r['latency_ms']['p99'], '.1f')} / "
         f"{fmt_num(r['latency_ms']['max'], '.1f')} ms"],
        ["other load % (server / generator core)", fmt_num(r.get("other_cpu_pct_server_core"), ".0f") + " / "
         + fmt_num(r.get("other_cpu_pct_generator_core"), ".0f")],
    ])
    checks = {
        "every reply ended with stop": r["replies_ended"] == r["replies"] and r["finish_reasons"] == ["stop"],
        "every token arrived, in order": r["pieces_received"] == r["provider_deltas"]
                                         and not r["replies_out_of_order_or_short"],
        f"at most {MAX_FRAMES_PER_S} frames in any second (+1 for the final flush)":
            r["max_frames_in_1s"] <= MAX_FRAMES_PER_S + 1,
        "stored replies equal the deltas": r["stored_equals_deltas"] == r["replies"] == r["stored_equals_frames"],
    }
    for name, ok in checks.items():
        print(f"check: {name}: {target_verdict(ok)}")
    save_json(args.json, args, summary, runs)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
