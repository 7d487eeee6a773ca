"""An assistant reply as it is generated (``ReplyStream``, from ``LiveConnection.ask`` and
``regenerate``): its deltas in order, across reconnects, then the stored reply."""

from __future__ import annotations

import asyncio
import collections
from typing import AsyncIterator, Protocol

from .errors import ConnectionFailed
from .events import AiDelta, AiDone, Event, NewMessage, event_conversation
from .models import Message

__all__ = ["ReplyStream", "ReplySource", "Closed"]


class Closed(Exception):
    """The connection was closed by its owner: iterators end quietly."""


class ReplySource(Protocol):
    """What a ``ReplyStream`` needs of its connection (``LiveConnection``)."""

    def add_listener(self, queue: asyncio.Queue[Event | BaseException]) -> None: ...

    def remove_listener(self, queue: asyncio.Queue[Event | BaseException]) -> None: ...

    def seen_ids(self, conversation_id: str) -> "collections.OrderedDict[str, str]": ...

    async def stop(self, conversation_id: str) -> bool: ...


class ReplyStream:
    """An assistant reply as it is generated (``LiveConnection.ask``).

    ``async for delta in stream`` yields the reply's text piece by piece (their concatenation
    is the stored reply's content, also across reconnects), and ends when the reply is stored;
    ``stream.message`` is then the stored ``Message`` (``type == "error"`` when the provider
    failed; ``metadata["finishReason"]`` says how it ended). ``await stream.final()`` does
    both at once; ``await stream.stop()`` stops the generation (the partial reply is stored).
    """

    def __init__(self, live: ReplySource, conversation_id: str) -> None:
        self.live = live
        self.conversation_id = conversation_id
        self.question: Message | None = None
        self.message_id: str | None = None
        self.message: Message | None = None
        self.finish_reason: str | None = None
        self.text = ""
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        live.add_listener(self._queue)

    def close(self) -> None:
        self.live.remove_listener(self._queue)

    def _is_the_reply(self, message: Message) -> bool:
        if message.role != "assistant":
            return False
        if self.message_id is not None and message.id == self.message_id:
            return True
        return self.question is not None and message.parent_id == self.question.id

    def __aiter__(self) -> AsyncIterator[str]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[str]:
        try:
            while self.message is None:
                item = await self._queue.get()
                if isinstance(item, BaseException):
                    raise ConnectionFailed("The connection was closed") if isinstance(item, Closed) else item
                if event_conversation(item) != self.conversation_id:
                    continue
                if isinstance(item, AiDelta):
                    if self.message_id is None and item.message_id not in self.live.seen_ids(self.conversation_id):
                        self.message_id = item.message_id
                    if item.message_id == self.message_id and item.delta:
                        self.text += item.delta
                        yield item.delta
                elif isinstance(item, AiDone) and item.message_id == self.message_id:
                    self.finish_reason = item.finish_reason
                elif isinstance(item, NewMessage) and self._is_the_reply(item.message):
                    self.message = item.message
                    self.message_id = item.message.id
                    content = item.message.content
                    if item.message.type != "error" and content.startswith(self.text) and len(content) > len(self.text):
                        rest = content[len(self.text):]  # generated while the connection was down
                        self.text = content
                        yield rest
                    self.finish_reason = self.finish_reason or item.message.metadata.get("finishReason")
        finally:
            self.close()

    async def final(self) -> Message:
        """Wait for the stored reply (consuming the deltas not read yet)."""
        async for _ in self:
            pass
        assert self.message is not None
        return self.message

    async def stop(self) -> bool:
        return await self.live.stop(self.conversation_id)
