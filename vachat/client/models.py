"""What the API returns, as typed objects: messages, conversations, pages, files, tokens.

Each keeps the wire object it was made from in ``raw`` (camelCase, as the server sent it), so
a field this client does not name yet is still at hand.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["Message", "Conversation", "MessagePage", "Page", "FileInfo", "User", "new_client_message_id"]


def new_client_message_id() -> str:
    """A fresh ``clientMessageId``: the same id sent again is a retry, stored once."""
    return uuid.uuid4().hex

T = TypeVar("T")


@dataclass(frozen=True)
class Message:
    """A chat message (README: Chat): ``role`` is ``user``, ``assistant`` or ``system``; an
    assistant's failed reply has ``type == "error"`` and says what failed in ``content``."""

    id: str
    conversation_id: str
    role: str
    type: str
    content: str
    user_id: str | None = None
    parent_id: str | None = None
    client_message_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    is_edited: bool = False
    created_at: str = ""
    updated_at: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "Message":
        return cls(
            id=data["id"], conversation_id=data.get("conversationId", ""), role=data.get("role", "user"),
            type=data.get("type", "text"), content=data.get("content", ""), user_id=data.get("userId"),
            parent_id=data.get("parentId"), client_message_id=data.get("clientMessageId"),
            metadata=data.get("metadata") or {}, files=data.get("files") or [],
            is_edited=bool(data.get("isEdited")), created_at=data.get("createdAt", ""),
            updated_at=data.get("updatedAt", ""), raw=data,
        )


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    owner_id: str = ""
    description: str = ""
    is_public: bool = False
    is_archived: bool = False
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    current_message_id: str | None = None
    message_count: int = 0
    last_message: Message | None = None
    created_at: str = ""
    updated_at: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "Conversation":
        last = data.get("lastMessage")
        return cls(
            id=data["id"], title=data.get("title", ""), owner_id=data.get("ownerId", ""),
            description=data.get("description", ""), is_public=bool(data.get("isPublic")),
            is_archived=bool(data.get("isArchived")), tags=list(data.get("tags") or []),
            metadata=data.get("metadata") or {}, current_message_id=data.get("currentMessageId"),
            message_count=int(data.get("messageCount") or 0),
            last_message=Message.from_wire(last) if isinstance(last, dict) else None,
            created_at=data.get("createdAt", ""), updated_at=data.get("updatedAt", ""), raw=data,
        )


@dataclass(frozen=True)
class MessagePage:
    """A cursor page (messages: newest first; search: best match first). Pass
    ``next_cursor`` back to continue in the same direction; None when there is no more."""

    items: list[Message]
    next_cursor: str | None


@dataclass(frozen=True)
class Page(Generic[T]):
    """A page of a paginated list: ``page`` from 1, ``total`` items in all."""

    items: list[T]
    page: int
    limit: int
    total: int
    total_pages: int


@dataclass(frozen=True)
class FileInfo:
    id: str
    original_name: str
    mime_type: str
    size: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "FileInfo":
        return cls(id=data["id"], original_name=data.get("originalName", ""), mime_type=data.get("mimeType", ""),
                   size=int(data.get("size") or 0), raw=data)


@dataclass(frozen=True)
class User:
    id: str
    email: str
    display_name: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "User":
        return cls(id=data["id"], email=data.get("email", ""), display_name=data.get("displayName"), raw=data)
