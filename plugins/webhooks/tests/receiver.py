"""A webhook receiver on loopback for the tests: records every request and answers what the
test scripts (a status per request, then 200)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
import tornado.web


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    #: Statuses to answer, in order; once used up, every request gets 200.
    script: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _server: Any = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "Receiver":
        receiver = self

        class Hook(tornado.web.RequestHandler):
            def post(self) -> None:
                receiver.requests.append(Received(
                    {k.lower(): v for k, v in self.request.headers.items()}, self.request.body))
                receiver._arrived.set()
                status = receiver.script.pop(0) if receiver.script else 200
                self.set_status(status)
                if status in (301, 302, 307):
                    self.set_header("Location", receiver.url + "/elsewhere")
                self.finish("x" * 5000 if status >= 500 else "ok")

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/hook.*", Hook)]))
        self._server.add_sockets([sock])
        return self

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Until ``count`` requests have arrived (bounded)."""
        async def arrived() -> None:
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()
        await asyncio.wait_for(arrived(), timeout)
        return self.requests

    def stop(self) -> None:
        self._server.stop()
