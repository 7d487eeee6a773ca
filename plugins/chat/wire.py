"""Chat's wire shapes (camelCase dicts, as the API and the socket frames show them): a message
built in one place (``message_shape``) whether it comes from a model, a bulk insert or the
conversation list's rows; a conversation; a draft of a message about to be stored; the data of
``message-deleted``. Pure functions, no queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vachat.plugin_api import ValidationFailed, check_json_size, new_id

from .models import Conversation, ConversationRow, Message

__all__ = ["message_shape", "message_wire", "conversation_wire", "Draft", "deleted_frame", "check_metadata",
           "AnyConversation"]

# A conversation as a model, or as the send path reads it (``ConversationRow``).
AnyConversation = Conversation | ConversationRow


def check_metadata(body: dict[str, Any]) -> None:
    """Refuse a body whose ``metadata`` takes more than ``JSON_BLOB_MAX_BYTES`` encoded (400
    on ``metadata``): it is stored whole and sent with every page and frame of the record."""
    if body.get("metadata") is not None:
        check_json_size(body["metadata"], "metadata")


def message_shape(id: str, conversation_id: str, user_id: str | None, role: str, type: str, content: str,
                  parent_id: str | None, metadata: dict[str, Any], client_message_id: str | None,
                  is_edited: bool, edited_at: Any, files: list[str], created_at: Any, updated_at: Any,
                  seq: int) -> dict[str, Any]:
    """A message as the API shows it: the one place its keys are written, whether its values
    come from a model (``message_wire``), a send batch's bulk insert (``store``) or the
    conversation list's rows (``listing``; timestamps there are already text)."""
    return {
        "id": id, "conversationId": conversation_id, "userId": user_id, "role": role, "type": type,
        "content": content, "parentId": parent_id, "metadata": metadata,
        "clientMessageId": client_message_id, "isEdited": is_edited, "editedAt": edited_at,
        "files": [{"id": file_id} for file_id in files], "createdAt": created_at, "updatedAt": updated_at,
        "seq": seq,
    }


def message_wire(message: Message, files: list[str] | None = None) -> dict[str, Any]:
    return message_shape(message.id, message.conversation_id, message.user_id, message.role, message.type,
                         message.content, message.parent_id, message.metadata or {}, message.client_message_id,
                         message.is_edited, message.edited_at, files or [], message.created_at, message.updated_at,
                         message.seq)


def conversation_wire(conversation: AnyConversation, tags: list[str],
                      last_message: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": conversation.id, "ownerId": conversation.owner_id, "title": conversation.title,
        "description": conversation.description, "isPublic": conversation.is_public,
        "isArchived": conversation.is_archived, "tags": tags, "metadata": conversation.metadata or {},
        "currentMessageId": conversation.current_message_id, "messageCount": conversation.message_count,
        "lastMessage": last_message, "createdAt": conversation.created_at, "updatedAt": conversation.updated_at,
    }


@dataclass
class Draft:
    """A message about to be stored, as a client sent it (validated by the schema)."""

    conversation_id: str
    content: str
    type: str
    files: list[str]
    parent_id: str | None
    metadata: dict[str, Any]
    client_message_id: str | None
    requires_ai: bool
    #: Names this attempt to store the message, for the hooks: what a ``before_store``
    #: implementation reserved for it is released by ``chat_message_refused`` with the same id.
    #: Made by the first ``name()``: a send no hook sees needs none (≈ 1.2 µs).
    draft_id: str | None = None

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> "Draft":
        check_metadata(body)
        files = list(dict.fromkeys(body.get("files") or []))
        content = body.get("content", "")
        if not content.strip() and not files:
            raise ValidationFailed("A message needs content or files", details=[
                {"field": "content", "message": "must not be blank when no files are attached"}])
        return cls(body["conversationId"], content, body.get("type", "text"), files, body.get("parentId"),
                   body.get("metadata") or {}, body.get("clientMessageId"), bool(body.get("requiresAIResponse")))

    def wire(self) -> dict[str, Any]:
        """What ``chat_message_before_store`` sees, but for ``draftId`` (None): what ``acts_on``
        predicates see; ``name`` fills it in when a hook is to see it."""
        return {"draftId": None, "conversationId": self.conversation_id, "content": self.content,
                "type": self.type, "files": list(self.files), "parentId": self.parent_id,
                "metadata": self.metadata, "clientMessageId": self.client_message_id,
                "requiresAIResponse": self.requires_ai}

    def name(self, message: dict[str, Any]) -> dict[str, Any]:
        """``message`` (this draft's ``wire()``) with this attempt's ``draftId``, made on first use."""
        if self.draft_id is None:
            self.draft_id = new_id()
        message["draftId"] = self.draft_id
        return message

    def same_as(self, stored: dict[str, Any]) -> bool:
        """Whether a retry carries the message already stored under its clientMessageId."""
        return (stored["content"] == self.content and stored["type"] == self.type
                and [f["id"] for f in stored["files"]] == self.files)


def deleted_frame(conversation_id: str, message_id: str, seq: int) -> dict[str, Any]:
    """The data of ``message-deleted``."""
    return {"conversationId": conversation_id, "messageId": message_id, "seq": seq}
