"""Tools the client's tests share: a TCP proxy the test can cut, and an event recorder."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from vachat.client import Event, LiveConnection, NewMessage

# Bounded waits (s): what has not happened by then is not going to.
WAIT = 15.0


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the server. ``cut()`` aborts every connection (a reset,
    as a dead network or a crashed balancer gives) and refuses new ones until ``restore()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.refusing = False
        self.accepted = 0
        self._server: asyncio.base_events.Server | None = None
        self._transports: set[asyncio.Transport] = set()
        self._handlers: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> "TcpProxy":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.cut()
        self._server.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)  # each ends once cut
        await self._server.wait_closed()

    def cut(self) -> None:
        self.refusing = True
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    def restore(self) -> None:
        self.refusing = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        if self.refusing:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer.transport, upstream_writer.transport}
        self._transports |= pair

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                for transport in pair:
                    transport.abort()
                self._transports -= pair

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))


class Recorder:
    """Reads ``async for event in live`` into ``events``; ``wait_for(predicate)`` waits until
    the events seen so far satisfy it."""

    def __init__(self, live: LiveConnection) -> None:
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.ensure_future(self._read(live))

    async def _read(self, live: LiveConnection) -> None:
        try:
            async for event in live:
                self.events.append(event)
                self._changed.set()
        except BaseException as error:
            self.error = error
            self._changed.set()

    def of(self, kind: type) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    def message_ids(self) -> list[str]:
        return [event.message.id for event in self.of(NewMessage)]

    async def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = WAIT) -> None:
        async def wait() -> None:
            while not predicate(self.events):
                if self.error is not None:
                    raise self.error
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)

    def stop(self) -> None:
        self._task.cancel()
