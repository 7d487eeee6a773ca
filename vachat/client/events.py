"""What ``async for event in live`` yields: one typed object per server event (docs/websocket.md),
plus the connection's own state changes (``Disconnected``, ``Reconnected``).

``parse_event`` turns a server frame into its event; a type this client does not know yet
becomes ``OtherEvent`` (the protocol may add events without raising its version).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .models import Conversation, Message

__all__ = [
    "Event", "Ready", "NewMessage", "MessageUpdated", "MessageDeleted", "ConversationCreated",
    "ConversationUpdated", "ConversationDeleted", "UserTyping", "UserStoppedTyping", "AiTyping",
    "AiDelta", "AiDone", "ErrorEvent", "OtherEvent", "Disconnected", "Reconnected", "parse_event",
    "event_conversation",
]


class Event:
    """Base of every event. Those about a conversation have ``conversation_id``
    (``event_conversation(event)`` reads it, None for the others)."""


def event_conversation(event: Event) -> str | None:
    """The conversation an event is about, or None."""
    return getattr(event, "conversation_id", None)


@dataclass(frozen=True)
class Ready(Event):
    user_id: str
    session_id: str
    protocol: int


@dataclass(frozen=True)
class NewMessage(Event):
    message: Message

    @property
    def conversation_id(self) -> str:
        return self.message.conversation_id


@dataclass(frozen=True)
class MessageUpdated(Event):
    message: Message

    @property
    def conversation_id(self) -> str:
        return self.message.conversation_id


@dataclass(frozen=True)
class MessageDeleted(Event):
    conversation_id: str
    message_id: str
    seq: int | None = None  # the deletion's change seq (None when read back from a join's answer)


@dataclass(frozen=True)
class ConversationCreated(Event):
    conversation: Conversation


@dataclass(frozen=True)
class ConversationUpdated(Event):
    conversation: Conversation


@dataclass(frozen=True)
class ConversationDeleted(Event):
    conversation_id: str


@dataclass(frozen=True)
class UserTyping(Event):
    conversation_id: str
    user_id: str
    user_name: str


@dataclass(frozen=True)
class UserStoppedTyping(Event):
    conversation_id: str
    user_id: str


@dataclass(frozen=True)
class AiTyping(Event):
    conversation_id: str
    typing: bool


@dataclass(frozen=True)
class AiDelta(Event):
    """A piece of the assistant's reply ``message_id``. ``index`` counts pieces from 0. After a
    reconnect one ``AiDelta`` may carry the text of several pieces generated meanwhile: its
    ``index`` is then the last piece it covers."""

    conversation_id: str
    message_id: str
    index: int
    delta: str


@dataclass(frozen=True)
class AiDone(Event):
    """The reply ended: ``finish_reason`` is ``stop``, ``length``, ``cancelled``, ``error`` or
    ``shutdown``. The stored reply follows as a ``NewMessage``."""

    conversation_id: str
    message_id: str
    finish_reason: str


@dataclass(frozen=True)
class ErrorEvent(Event):
    """An ``error`` frame that answered no request of this client."""

    code: str
    message: str
    details: Any = None


@dataclass(frozen=True)
class OtherEvent(Event):
    type: str
    data: Any


@dataclass(frozen=True)
class Disconnected(Event):
    """The connection dropped; the client is reconnecting (nothing is lost meanwhile)."""

    reason: str


@dataclass(frozen=True)
class Reconnected(Event):
    """The connection is back, its conversations re-joined, what was missed delivered."""


def parse_event(kind: str, data: Any) -> Event:
    """The event for a server frame ``{"type": kind, "data": data}``."""
    data = data if isinstance(data, dict) else {}
    try:
        if kind == "new-message":
            return NewMessage(Message.from_wire(data))
        if kind == "message-updated":
            return MessageUpdated(Message.from_wire(data))
        if kind == "message-deleted":
            return MessageDeleted(data["conversationId"], data["messageId"], data.get("seq"))
        if kind == "conversation-created":
            return ConversationCreated(Conversation.from_wire(data))
        if kind == "conversation-updated":
            return ConversationUpdated(Conversation.from_wire(data))
        if kind == "conversation-deleted":
            return ConversationDeleted(data["conversationId"])
        if kind == "user-typing":
            return UserTyping(data["conversationId"], data.get("userId", ""), data.get("userName") or "")
        if kind == "user-stopped-typing":
            return UserStoppedTyping(data["conversationId"], data.get("userId", ""))
        if kind == "ai-typing":
            return AiTyping(data["conversationId"], bool(data.get("typing")))
        if kind == "ai-delta":
            return AiDelta(data["conversationId"], data["messageId"], int(data["index"]), data.get("delta") or "")
        if kind == "ai-done":
            return AiDone(data["conversationId"], data["messageId"], data.get("finishReason") or "stop")
        if kind == "error":
            return ErrorEvent(str(data.get("code") or "ERROR"), str(data.get("message") or ""), data.get("details"))
        if kind == "ready":
            return Ready(data.get("userId", ""), data.get("sessionId", ""), int(data.get("protocol") or 1))
    except (KeyError, TypeError, ValueError):
        pass  # a frame missing what its type promises is passed on as it came
    return OtherEvent(kind, data)
