"""The chat plugin's tables: conversations, their tags, messages and the files messages carry.

Every query the API makes is an index scan (a test shows the plans):

- the conversation list: ``(owner_id, is_archived, <sort column>, id)`` per whitelisted sort;
- the tag filter: ``chat_conversation_tag (owner_id, tag, conversation_id)``;
- message pages (cursor = message id, ids are time-ordered): ``(conversation_id, id)``;
- the join replay of edits and deletes: ``(conversation_id, updated_at)``;
- the changes after a sequence number (``sinceSeq``, a node catching up): ``(conversation_id, seq)``;
- a user's messages (account deletion): ``(user_id)``;
- idempotent sends: unique ``(conversation_id, client_message_id)``.

Deleting a message is soft: the row stays as a tombstone (``deleted_at`` set, content,
metadata and file links cleared) so that a client rejoining with ``since`` learns the id in
``deleted``, and a ``since`` or cursor naming it still has a place in the order. Tombstones
are never listed, searched or counted. Deleting a conversation removes everything (hard).

Every change of a conversation's messages (a message stored, edited or deleted) takes the next
number of the conversation's ``seq`` counter, in the transaction that makes the change (under
the conversation's row lock), and writes it on the message (``seq``): live frames carry it, so
a socket drops what it already has and a node that lost frames (a broker outage) reads
"every change after seq N" back from here.

``message_count`` and ``last_message_id`` are kept on the conversation, in the transaction
that stores or deletes a message, so a page of conversations needs no per-row aggregate.
Likewise ``chat_daily_count`` holds how many live messages and conversations were created on
each UTC day (see ``counters``), so the admin dashboard never counts messages.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import peewee

from vachat.plugin_api import BaseModel, JSONField, now

__all__ = ["Conversation", "ConversationRow", "ConversationTag", "Message", "MessageFile", "DailyCount", "ROLES", "MESSAGE_TYPES"]

ROLES = ("user", "assistant", "system")
MESSAGE_TYPES = ("text", "file", "image", "audio", "error")
# Owner ids are the accounts' ids (26-character ULIDs); 64 leaves room for other schemes.
USER_ID_LENGTH = 64


class Conversation(BaseModel):
    owner_id = peewee.CharField(max_length=USER_ID_LENGTH)
    title = peewee.CharField(max_length=200)
    description = peewee.TextField(default="")
    is_public = peewee.BooleanField(default=False)
    is_archived = peewee.BooleanField(default=False)
    metadata = JSONField(default=dict)
    current_message_id = peewee.CharField(max_length=26, null=True)
    last_message_id = peewee.CharField(max_length=26, null=True)
    message_count = peewee.IntegerField(default=0)
    # The latest change's sequence number (see the module docstring).
    seq = peewee.BigIntegerField(default=0)
    created_at = peewee.DateTimeField(default=now)
    updated_at = peewee.DateTimeField(default=now)

    class Meta:
        table_name = "chat_conversation"
        indexes = (
            (("owner_id", "is_archived", "updated_at", "id"), False),
            (("owner_id", "is_archived", "created_at", "id"), False),
            (("owner_id", "is_archived", "title", "id"), False),
        )


class ConversationTag(BaseModel):
    conversation = peewee.ForeignKeyField(Conversation, backref="tag_rows", on_delete="CASCADE", index=False)
    owner_id = peewee.CharField(max_length=USER_ID_LENGTH)
    tag = peewee.CharField(max_length=50)

    class Meta:
        table_name = "chat_conversation_tag"
        indexes = (
            (("conversation", "tag"), True),
            (("owner_id", "tag", "conversation"), False),
        )


class Message(BaseModel):
    conversation = peewee.ForeignKeyField(Conversation, backref="messages", on_delete="CASCADE", index=False)
    user_id = peewee.CharField(max_length=USER_ID_LENGTH, null=True)  # None for the assistant
    role = peewee.CharField(max_length=16, default="user")
    type = peewee.CharField(max_length=16, default="text")
    content = peewee.TextField(default="")
    parent_id = peewee.CharField(max_length=26, null=True)
    metadata = JSONField(default=dict)
    client_message_id = peewee.CharField(max_length=100, null=True)
    is_edited = peewee.BooleanField(default=False)
    edited_at = peewee.DateTimeField(null=True)
    deleted_at = peewee.DateTimeField(null=True)
    # The conversation's seq of this message's latest change (store, edit, delete), and of
    # its store: a change after seq N is ``seq > N``; it was a new message if ``created_seq > N``.
    seq = peewee.BigIntegerField(default=0)
    created_seq = peewee.BigIntegerField(default=0)
    created_at = peewee.DateTimeField(default=now)
    updated_at = peewee.DateTimeField(default=now)

    class Meta:
        table_name = "chat_message"
        indexes = (
            (("conversation", "id"), False),
            (("conversation", "updated_at"), False),
            (("conversation", "seq"), False),
            (("user_id",), False),
        )


# A clientMessageId names one message of its conversation (the retry check). Partial: the many
# messages without one (assistant replies among them) write no entry (migration 003).
Message.add_index(Message.index(Message.conversation, Message.client_message_id, unique=True,
                                where=Message.client_message_id.is_null(False)))


class MessageFile(BaseModel):
    message = peewee.ForeignKeyField(Message, backref="file_rows", on_delete="CASCADE", index=False)
    file_id = peewee.CharField(max_length=64)
    position = peewee.SmallIntegerField(default=0)

    class Meta:
        table_name = "chat_message_file"
        indexes = (
            (("message", "file_id"), True),
            (("file_id",), False),
        )


@dataclass(slots=True)
class ConversationRow:
    """A conversation as ``Conversation``'s fields give it (``wire.conversation_wire`` and
    the access checks read either), read without building a model (``listing``)."""

    id: str
    owner_id: str
    title: str
    description: str
    is_public: bool
    is_archived: bool
    metadata: dict[str, Any]
    current_message_id: str | None
    message_count: int
    created_at: datetime.datetime
    updated_at: datetime.datetime
    last_message_id: str | None


class DailyCount(BaseModel):
    """Live messages and conversations created on ``day`` (UTC), in one of a few slots.

    A day's figure is the sum of its slots. Writers add to the slot of their conversation
    (``counters.slot_of``), so concurrent writes to different conversations rarely wait on the
    same row; writes to one conversation already wait on its row (``message_count``).
    """

    day = peewee.DateField()
    slot = peewee.SmallIntegerField()
    messages = peewee.BigIntegerField(default=0)
    conversations = peewee.BigIntegerField(default=0)

    class Meta:
        table_name = "chat_daily_count"
        indexes = (
            # One row per day and slot, added to in place (an upsert's conflict target); the
            # dashboard's last-seven-days range reads it too.
            (("day", "slot"), True),
        )
