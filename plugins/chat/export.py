"""Chat's part of a user's data export: ``conversations.json``.

Every conversation the user owns, oldest first, each with all its messages (every branch,
oldest first, in the API's wire shape; deleted messages are left out, as the API shows them to
nobody). The document is written a conversation at a time, each read in its own short query on
a database thread, so an account with years of history never sits in memory whole.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from vachat.plugin_api import App, UserExport, json_dumps

from . import listing
from .models import Conversation, Message
from .wire import conversation_wire, message_wire

__all__ = ["add_conversations"]

def _conversation_ids(owner_id: str) -> list[str]:
    query = (Conversation.select(Conversation.id).where(Conversation.owner_id == owner_id)
             .order_by(Conversation.created_at, Conversation.id))
    return [row.id for row in query]


def _conversation_document(conversation_id: str) -> dict[str, Any] | None:
    conversation = Conversation.get_or_none(Conversation.id == conversation_id)
    if conversation is None:
        return None  # deleted while the export ran
    messages = list(Message.select().where((Message.conversation == conversation_id) & Message.deleted_at.is_null())
                    .order_by(Message.created_at, Message.id))
    files = listing.files_of([message.id for message in messages])
    document = conversation_wire(conversation, listing.tags_of([conversation_id]).get(conversation_id, []))
    document.pop("lastMessage", None)
    document["messages"] = [message_wire(message, files.get(message.id)) for message in messages]
    return document


def add_conversations(app: App, user_id: str, export: UserExport) -> None:
    """Add ``conversations.json`` (a JSON array) to ``export``."""

    async def chunks() -> AsyncIterator[bytes]:
        ids = await app.db.run(_conversation_ids, user_id)
        yield b"["
        first = True
        for conversation_id in ids:
            document = await app.db.run(_conversation_document, conversation_id)
            if document is None:
                continue
            yield (b"" if first else b",") + json_dumps(document).encode("utf-8")
            first = False
        yield b"]"

    export.add_stream("conversations.json", chunks)
