"""A real OpenAI-compatible chat-completions server for the tests, on loopback.

It follows the public streaming format: ``POST /v1/chat/completions`` with ``stream: true``
answers ``text/event-stream`` with ``data: {chunk}`` events (a first chunk with the role, one
per token with ``choices[0].delta.content``, one with ``finish_reason``, then, when the request
asked for ``stream_options.include_usage``, a chunk with empty ``choices`` and ``usage``) and
``data: [DONE]``. A test scripts what the next requests get (``Script``): an error status,
a stall before the first token or after some tokens, a connection dropped mid-answer,
slow tokens, no usage. The server records
every request and every client that went away before the end of its answer.

It runs on the test's IOLoop, so it serves both the in-process app and spawned server processes.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

import tornado.http1connection
import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

__all__ = ["Script", "FakeOpenAI"]


@dataclass
class Script:
    """What one request gets."""

    tokens: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    #: Answer this status with an error body instead of streaming (429, 500 …).
    status: int = 200
    retry_after: str | None = None
    #: Seconds between tokens.
    delay: float = 0.0
    #: Send the headers, then nothing until the client goes (or the test ends).
    stall_before_first: bool = False
    #: Stall after this many tokens.
    stall_after: int | None = None
    #: Drop the connection (no end of stream) after this many tokens.
    drop_after: int | None = None
    #: Send a usage chunk when asked (stream_options.include_usage).
    usage: bool = True
    finish_reason: str = "stop"


@dataclass
class Seen:
    """One request as the server saw it."""

    body: dict[str, Any]
    headers: dict[str, str]
    #: Tokens written before the answer ended.
    sent: int = 0
    #: The client closed the connection before the answer's end.
    client_left: bool = False
    finished: bool = False


class FakeOpenAI:
    def __init__(self) -> None:
        self.default = Script()
        self.queue: list[Script] = []
        self.requests: list[Seen] = []
        self._changed = asyncio.Event()
        self._release = asyncio.Event()
        self._server: tornado.httpserver.HTTPServer | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *scripts: Script) -> None:
        """The next requests get these, in order; later ones get ``default``."""
        self.queue.extend(scripts)

    def start(self) -> "FakeOpenAI":
        app = tornado.web.Application([(r"/v1/chat/completions", CompletionsHandler, {"fake": self})])
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self._server = tornado.httpserver.HTTPServer(app)
        self._server.add_sockets(sockets)
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()

    def next_script(self) -> Script:
        return self.queue.pop(0) if self.queue else self.default

    def changed(self) -> None:
        self._changed.set()

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait until ``predicate(self)`` holds (a request arrived, a client left …)."""

        async def wait() -> None:
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)


class CompletionsHandler(tornado.web.RequestHandler):
    def initialize(self, fake: FakeOpenAI) -> None:
        self.fake = fake
        self.gone = asyncio.Event()
        self.seen: Seen | None = None

    def on_connection_close(self) -> None:
        self.gone.set()
        if self.seen is not None and not self.seen.finished:
            self.seen.client_left = True
        self.fake.changed()

    async def post(self) -> None:
        body = json.loads(self.request.body)
        seen = self.seen = Seen(body, dict(self.request.headers))
        self.fake.requests.append(seen)
        self.fake.changed()
        script = self.fake.next_script()
        try:
            await self._answer(script, body, seen)
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            seen.finished = not seen.client_left
            self.fake.changed()

    async def _answer(self, script: Script, body: dict[str, Any], seen: Seen) -> None:
        if script.status != 200:
            self.set_status(script.status)
            if script.retry_after is not None:
                self.set_header("Retry-After", script.retry_after)
            self.finish({"error": {"message": f"scripted {script.status}", "type": "server_error"}})
            return
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        model = body.get("model", "fake-model")
        chunk_id = f"chatcmpl-{len(self.fake.requests)}"

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = {"id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model, "choices": choices, **extra}
            self.write(f"data: {json.dumps(chunk)}\n\n")
            await self.flush()

        await send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        if script.stall_before_first:
            await self._stall()
            return
        for position, token in enumerate(script.tokens):
            if script.stall_after is not None and position == script.stall_after:
                await self._stall()
                return
            if script.drop_after is not None and position == script.drop_after:
                connection = cast(tornado.http1connection.HTTP1Connection, self.request.connection)
                connection.stream.close()
                return
            if position and script.delay:
                await self._pause(script.delay)
                if self.gone.is_set():
                    return
            await send([{"index": 0, "delta": {"content": token}, "finish_reason": None}])
            seen.sent += 1
            self.fake.changed()
        await send([{"index": 0, "delta": {}, "finish_reason": script.finish_reason}])
        if script.usage and (body.get("stream_options") or {}).get("include_usage"):
            prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
            await send([], usage={"prompt_tokens": prompt, "completion_tokens": len(script.tokens),
                                  "total_tokens": prompt + len(script.tokens)})
        self.write("data: [DONE]\n\n")
        self.finish()

    async def _stall(self) -> None:
        """Send nothing more until the client goes or the test ends."""
        await self._pause(None)

    async def _pause(self, seconds: float | None) -> None:
        waits = [asyncio.ensure_future(self.gone.wait()), asyncio.ensure_future(self.fake._release.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
