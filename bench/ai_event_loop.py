"""How long one callback holds the event loop while ten AI replies stream at once.

The whole server runs in this process (the chat and ai plugins, the ``openai`` provider, a
throw-away SQLite database) against the OpenAI-compatible server the AI tests use, on loopback.
Ten users' messages ask for replies of 60 tokens each at once; every event-loop callback is
timed meanwhile. Printed: how many callbacks ran, the longest one and the 99.9th percentile,
and how many held the loop for 50 ms or more (asyncio's slow-callback threshold in debug mode,
the bar for "never blocked"). A callback's time is its wall time less the time the kernel kept
the thread waiting for a CPU meanwhile (``/proc/thread-self/schedstat``), so a busy machine
does not show up as a blocked loop; the figure is still a wall-clock one: read it on a quiet
machine, and compare runs of the same machine only.

    .venv/bin/python bench/ai_event_loop.py [--replies 10] [--tokens 60]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tornado.httpclient  # noqa: E402
import tornado.httpserver  # noqa: E402
import tornado.websocket  # noqa: E402

from plugins.ai.tests.fake_openai import FakeOpenAI, Script  # noqa: E402
from vachat import testing_auth  # noqa: E402
from vachat.app import VachatApplication  # noqa: E402
from vachat.testing import free_port, make_test_settings, reset_database  # noqa: E402

# asyncio's slow-callback threshold in debug mode: the bar for "never blocked" (s).
SLOW_CALLBACK_SECONDS = 0.05
# A reply's tokens arrive this far apart from the fake server (s): a steady stream.
TOKEN_DELAY_SECONDS = 0.005


def runqueue_wait() -> float:
    """Seconds this thread has spent runnable but not running (waiting for a CPU), from the
    kernel's schedstat; 0 where it does not say."""
    try:
        with open("/proc/thread-self/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


class CallbackTimes:
    """Every event-loop callback's held time (wall time less run-queue wait), while entered."""

    def __init__(self) -> None:
        self.held: list[float] = []
        self._original = asyncio.events.Handle._run

    def __enter__(self) -> "CallbackTimes":
        original, held = self._original, self.held

        def timed_run(handle: asyncio.events.Handle) -> None:
            started, queued = time.perf_counter(), runqueue_wait()
            try:
                original(handle)
            finally:
                held.append((time.perf_counter() - started) - (runqueue_wait() - queued))

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.events.Handle._run = self._original  # type: ignore[method-assign]


async def call(base: str, path: str, user: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        base + path, method="POST", body=json.dumps(body),
        headers={"Authorization": f"Bearer test:{user}", "Content-Type": "application/json"})
    return json.loads(response.body)["data"]


async def frame_of(socket: Any, kind: str, **data: Any) -> dict[str, Any]:
    """Read frames until one of type ``kind`` whose data has the items ``data``."""
    while True:
        message = await socket.read_message()
        if message is None:
            raise ConnectionError("the server closed the socket")
        frame = json.loads(message)
        if frame["type"] == kind and all(frame.get("data", {}).get(k) == v for k, v in data.items()):
            return frame


async def reply_done(socket: Any) -> None:
    """Read frames until the reply ends (``ai-typing`` false)."""
    await frame_of(socket, "ai-typing", typing=False)


async def measure(replies: int, tokens: int) -> dict[str, Any]:
    fake = FakeOpenAI().start()
    fake.default = Script(tokens=[f"w{n} " for n in range(tokens)], delay=TOKEN_DELAY_SECONDS)
    with tempfile.TemporaryDirectory() as folder:
        section = {"provider": "openai", "base_url": fake.base_url, "api_key": "sk-bench", "model": "fake",
                   "timeout": 30, "idle_timeout": 30, "max_retries": 0}
        settings = make_test_settings(f"sqlite:///{folder}/bench.db", "", Path(folder),
                                      plugin_sections={"ai": section})
        app = VachatApplication(settings, extra_plugins=[("testauth", testing_auth)], only_plugins=["ai"])
        app.db.bind()
        reset_database(app)
        await app.start()
        port = free_port()
        server = tornado.httpserver.HTTPServer(app)
        server.listen(port, "127.0.0.1")
        base = f"http://127.0.0.1:{port}"
        try:
            sockets, conversations = [], []
            for n in range(replies):
                user = f"user{n}"
                conversation = await call(base, "/api/chat/conversations", user, {})
                socket = await tornado.websocket.websocket_connect(tornado.httpclient.HTTPRequest(
                    f"ws://127.0.0.1:{port}/ws", headers={"Authorization": f"Bearer test:{user}"}))
                socket.write_message(json.dumps({"type": "join-conversation", "id": 1,
                                                 "data": {"conversationId": conversation["id"]}}))
                await frame_of(socket, "ack")  # joined: measure the replies only
                sockets.append(socket)
                conversations.append((user, conversation["id"]))
            gc.collect()
            gc.freeze()  # the collector's full passes over start-up objects are not the replies' cost
            with CallbackTimes() as times:
                await asyncio.gather(*(call(base, "/api/chat/message", user, {
                    "conversationId": cid, "content": "go", "requiresAIResponse": True})
                    for user, cid in conversations))
                await asyncio.gather(*(reply_done(socket) for socket in sockets))
            gc.unfreeze()
        finally:
            server.stop()
            await app.shutdown()
            await fake.stop()
    held = sorted(times.held)
    return {"callbacks": len(held), "longest_ms": round(held[-1] * 1000, 2),
            "p999_ms": round(held[int(len(held) * 0.999)] * 1000, 2),
            "over_50ms": sum(1 for h in held if h >= SLOW_CALLBACK_SECONDS)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", type=int, default=10, help="replies streaming at once (default 10)")
    parser.add_argument("--tokens", type=int, default=60, help="tokens per reply (default 60)")
    args = parser.parse_args()
    result = asyncio.run(measure(args.replies, args.tokens))
    print(f"{args.replies} replies x {args.tokens} tokens: {result['callbacks']} callbacks, longest "
          f"{result['longest_ms']} ms, p99.9 {result['p999_ms']} ms, {result['over_50ms']} held the loop >= 50 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
