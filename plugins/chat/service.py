"""The chat service: every read and write of conversations and messages, in one place.

REST handlers, WebSocket events and other plugins (through ``app.service("chat")``) all go
through ``ChatService``, so a REST write and a socket write store the same rows, run the same
hooks and broadcast the same events. Each public method is a coroutine for the IOLoop; the
queries run on database threads (``app.db.run``), one transaction per write, and the events
go out after the commit (``app.hub.publish`` encodes and frames each once).

Access: the owner has full access; a public conversation is readable by any
signed-in user; a holder of ``conversations.read_all`` reads any. A conversation the caller
may not read is "not found" (404): its existence is not leaked. Writing to one the caller may
read but does not own is 403. ``actor=None`` means a trusted caller (another plugin acting for
the system, e.g. the AI storing its reply): no access check.

This module must never run a query on the IOLoop, broadcast before the commit, or hand a
caller a message of a conversation it may not read.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, TypeVar

import peewee

from vachat.plugin_api import (
    Actor, ApiError, App, Conflict, Forbidden, NotFound, ServiceKey, ValidationFailed, check_json_size, database,
    new_id, now,
)

from . import counters, listing, rooms, search
from .api import CHAT
from .rooms import conversation_room
from .models import Conversation, ConversationTag, Message, MessageFile

__all__ = ["ChatService", "SERVICE", "READ_ALL", "conversation_room", "user_room", "MAX_REPLAY"]

log = logging.getLogger("vachat.plugins.chat")

READ_ALL = "conversations.read_all"
# A join replays at most this many missed messages; the rest are paged over REST.
MAX_REPLAY = 200
# Deleted ids a join reports at most; past it ``hasMore`` tells the client to reload.
MAX_REPLAY_DELETED = 1000
# Messages read per step while walking a branch back from its leaf for ``history``.
HISTORY_STEP = 200
DEFAULT_TITLE = "New conversation"
# Most user messages stored in one transaction by the send batcher (see ``Batcher``): big
# enough to absorb a burst of concurrent senders, small enough that a batch holds the write
# lock for milliseconds, not seconds.
MAX_SEND_BATCH = 128


# A conversation as a model, or as the send path reads it (``listing.ConversationRow``).
AnyConversation = Conversation | listing.ConversationRow
# A conversation as a model or as the listing's row: ``_readable`` hands back what it was given.
C = TypeVar("C", Conversation, listing.ConversationRow)


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


def check_metadata(body: dict[str, Any]) -> None:
    """Refuse a body whose ``metadata`` takes more than ``JSON_BLOB_MAX_BYTES`` encoded (400
    on ``metadata``): it is stored whole and sent with every page and frame of the record."""
    if body.get("metadata") is not None:
        check_json_size(body["metadata"], "metadata")


# ---------------------------------------------------------------------------
# wire shapes (camelCase)
# ---------------------------------------------------------------------------


def message_wire(message: Message, files: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": message.id, "conversationId": message.conversation_id, "userId": message.user_id,
        "role": message.role, "type": message.type, "content": message.content,
        "parentId": message.parent_id, "metadata": message.metadata or {},
        "clientMessageId": message.client_message_id, "isEdited": message.is_edited,
        "editedAt": message.edited_at, "files": [{"id": file_id} for file_id in files or []],
        "createdAt": message.created_at, "updatedAt": message.updated_at, "seq": message.seq,
    }


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
    draft_id: str = field(default_factory=new_id)

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
        """What ``chat_message_before_store`` sees."""
        return {"draftId": self.draft_id, "conversationId": self.conversation_id, "content": self.content,
                "type": self.type, "files": list(self.files), "parentId": self.parent_id,
                "metadata": self.metadata, "clientMessageId": self.client_message_id,
                "requiresAIResponse": self.requires_ai}

    def same_as(self, stored: dict[str, Any]) -> bool:
        """Whether a retry carries the message already stored under its clientMessageId."""
        return (stored["content"] == self.content and stored["type"] == self.type
                and [f["id"] for f in stored["files"]] == self.files)


# ---------------------------------------------------------------------------
# queries (run on database threads)
# ---------------------------------------------------------------------------


def _readable(conversation: C | None, actor: Actor | None, write: bool) -> C:
    if conversation is None:
        raise NotFound("Conversation not found")
    if actor is None or conversation.owner_id == actor.id:
        return conversation
    if not (conversation.is_public or actor.has(READ_ALL)):
        raise NotFound("Conversation not found")
    if write:
        raise Forbidden("Only the owner can change this conversation")
    return conversation


def _load_conversation(conversation_id: str, actor: Actor | None, write: bool = False,
                       lock: bool = False) -> Conversation:
    """The conversation if ``actor`` may read it (``write``: change it); ``lock`` holds its
    row until the transaction ends (see ``_locked``)."""
    query = Conversation.select().where(Conversation.id == conversation_id)
    found: Conversation | None = (_locked(query) if lock else query).first()
    return _readable(found, actor, write)


def _conversation_of_message(message: Message, actor: Actor | None, write: bool = False,
                             lock: bool = False) -> Conversation:
    """``_load_conversation`` for an operation on ``message``: a conversation the caller may not
    read answers "Message not found", like a message that does not exist, so the answer never
    tells whether an id is a message in someone else's conversation."""
    try:
        return _load_conversation(message.conversation_id, actor, write=write, lock=lock)
    except NotFound:
        raise NotFound("Message not found") from None


def _locked(query: peewee.Select) -> peewee.Select:
    """``query`` holding its rows until the transaction ends, on PostgreSQL: a delete that
    counts a conversation's messages must not miss one stored (or deleted) meanwhile, and a
    message stored on another node must not be given the leaf another transaction is moving
    (both would answer the same message: a fork nobody asked for). SQLite needs nothing: its
    write transactions already run one at a time (BEGIN IMMEDIATE)."""
    return query.for_update() if isinstance(database.obj, peewee.PostgresqlDatabase) else query


def _next_seq(conversation: Conversation) -> int:
    """Take the conversation's next change seq, inside the change's transaction; the caller
    holds the conversation's row lock (``_load_conversation(lock=True)``)."""
    seq = int(conversation.seq) + 1
    Conversation.update(seq=seq).where(Conversation.id == conversation.id).execute()
    conversation.seq = seq
    return seq


def deleted_frame(conversation_id: str, message_id: str, seq: int) -> dict[str, Any]:
    """The data of ``message-deleted``."""
    return {"conversationId": conversation_id, "messageId": message_id, "seq": seq}


def _messages_wire(messages: list[Message]) -> list[dict[str, Any]]:
    files = listing.files_of([m.id for m in messages])
    return [message_wire(m, files[m.id]) for m in messages]


def _conversations_wire(conversations: list[Conversation]) -> list[dict[str, Any]]:
    """Conversations with tags and last message: three queries, whatever their number."""
    tags = listing.tags_of([c.id for c in conversations])
    last_ids = [c.last_message_id for c in conversations if c.last_message_id]
    last = {m["id"]: m for m in _messages_wire(list(Message.select().where(Message.id.in_(last_ids))))} \
        if last_ids else {}
    return [conversation_wire(c, tags[c.id], last.get(c.last_message_id)) for c in conversations]


def _set_tags(conversation: Conversation, tags: list[str]) -> None:
    ConversationTag.delete().where(ConversationTag.conversation == conversation.id).execute()
    if tags:
        ConversationTag.insert_many([
            {"id": new_id(), "conversation": conversation.id, "owner_id": conversation.owner_id, "tag": tag}
            for tag in dict.fromkeys(tags)]).execute()


def _insert_message(conversation_id: str, *, user_id: str | None, role: str, draft: Draft | None = None,
                    content: str = "", type: str = "text", parent_id: str | None = None,
                    metadata: dict[str, Any] | None = None, message_id: str | None = None,
                    actor: Actor | None = None) -> tuple[Message, bool, dict[str, Any]]:
    """Store a message and move the conversation's leaf to it, in one transaction, once
    ``actor`` (None: the system) may write there. Returns ``(message, True, conversation)``,
    or ``(the stored one, False, conversation)`` when the clientMessageId is taken."""
    if draft is not None:
        content, type, parent_id, metadata = draft.content, draft.type, draft.parent_id, draft.metadata
    client_message_id = draft.client_message_id if draft is not None else None
    with database.atomic():
        conversation = _load_conversation(conversation_id, actor, write=True, lock=True)
        if parent_id is None:
            parent_id = conversation.current_message_id
        elif not Message.select().where(Message.id == parent_id, Message.conversation == conversation_id,
                                        Message.deleted_at.is_null()).exists():
            raise ValidationFailed("parentId names no message of this conversation",
                                   details=[{"field": "parentId", "message": "is not a message of this conversation"}])
        stamp = now()
        seq = conversation.seq + 1  # read under the row lock (see _locked)
        try:
            with database.atomic():  # a savepoint: a taken clientMessageId must not abort the rest
                message = Message.create(
                    id=message_id or new_id(), conversation=conversation_id, user_id=user_id, role=role,
                    type=type, content=content, parent_id=parent_id, metadata=metadata or {},
                    client_message_id=client_message_id, seq=seq, created_seq=seq, created_at=stamp,
                    updated_at=stamp)
        except peewee.IntegrityError:
            if client_message_id is None:
                raise
            stored = Message.get_or_none(Message.conversation == conversation_id,
                                         Message.client_message_id == client_message_id)
            if stored is None:
                raise
            return stored, False, conversation_wire(conversation, [])
        counters.count_message(conversation_id, stamp)
        if draft is not None and draft.files:
            MessageFile.insert_many([{"id": new_id(), "message": message.id, "file_id": file_id, "position": index}
                                     for index, file_id in enumerate(draft.files)]).execute()
        (Conversation.update(current_message_id=message.id, last_message_id=message.id,
                             message_count=Conversation.message_count + 1, seq=seq, updated_at=stamp)
         .where(Conversation.id == conversation_id).execute())
        search.index_message(message.id, conversation_id, conversation.owner_id, content)
    return message, True, conversation_wire(conversation, [])


def _insert_user_messages(sends: list[tuple["Draft", Actor]]) -> list[tuple[bool, Any]]:
    """Store several users' messages in one transaction (see ``Batcher``): per send,
    ``(True, (message, created, conversation))`` (the wire shapes: the stored message, and
    the conversation as read before the insert; ``created`` False for a retry), or
    ``(False, the exception that refused it)``. Nothing is reported before the commit, and a
    failed commit fails them all.

    Plain messages (no parentId, no files) go in bulk (``_insert_plain``): a constant number of
    statements for the whole batch. The others, and all of them if the bulk insert meets a
    clientMessageId stored meanwhile (by another node), go one by one, each in a savepoint so
    that one refused leaves the rest alone."""
    outcomes: list[tuple[bool, Any] | None] = [None] * len(sends)
    with database.atomic():
        # Every conversation of the batch is locked first, in id order, before any counter row
        # (see ``_locked``): a transaction that then waits only waits for rows locked in the
        # same order, so two nodes' batches never deadlock.
        _lock_conversations({draft.conversation_id for draft, _ in sends})
        plain = [index for index, (draft, _) in enumerate(sends) if draft.parent_id is None and not draft.files]
        if plain:
            try:
                with database.atomic():
                    done = _insert_plain([sends[index] for index in plain])
            except peewee.IntegrityError:
                log.info("a clientMessageId of a batch was stored meanwhile: storing its messages one by one")
            else:
                for index, outcome in zip(plain, done):
                    outcomes[index] = outcome
        for index, (draft, actor) in enumerate(sends):
            if outcomes[index] is not None:
                continue
            try:
                with database.atomic():
                    row, created, conversation = _insert_message(draft.conversation_id, user_id=actor.id, role="user",
                                                                 draft=draft, actor=actor)
                message = message_wire(row, draft.files) if created else _messages_wire([row])[0]
                outcomes[index] = (True, (message, created, conversation))
            except Exception as error:  # told to that send's caller alone
                outcomes[index] = (False, error)
    return outcomes  # type: ignore[return-value]


def _latest_seqs(conversation_ids: Iterable[str]) -> dict[str, int]:
    """Each conversation's latest change seq (read under its row lock, inside a write)."""
    ids = sorted(conversation_ids)
    if not ids:
        return {}
    rows = database.obj.execute_sql(
        f"SELECT id, seq FROM {Conversation._meta.table_name} WHERE id IN ({', '.join([database.obj.param] * len(ids))})",
        ids).fetchall()
    return {conversation_id: seq for conversation_id, seq in rows}


def _lock_conversations(conversation_ids: set[str]) -> None:
    """Hold these conversations' rows until the transaction ends, taken in id order
    (PostgreSQL; nothing to do on SQLite, see ``_locked``)."""
    db = database.obj
    if isinstance(db, peewee.PostgresqlDatabase) and conversation_ids:
        ids = sorted(conversation_ids)
        db.execute_sql(f"SELECT id FROM {Conversation._meta.table_name} WHERE id IN ({', '.join(['%s'] * len(ids))}) "
                       "ORDER BY id FOR UPDATE", ids).fetchall()


def _read_for_sends(sends: list[tuple["Draft", Actor]]
                    ) -> tuple[dict[str, listing.ConversationRow], dict[tuple[str, str], dict[str, Any]]]:
    """The conversations ``sends`` go to, by id, and the messages already stored under their
    clientMessageIds (wire shapes), by ``(conversation id, clientMessageId)``: one query, or
    two when sends carry clientMessageIds, three when some are retries."""
    conversation_ids = {draft.conversation_id for draft, _ in sends}
    conversations = listing.conversations_by_id(conversation_ids)
    client_ids = {draft.client_message_id for draft, _ in sends if draft.client_message_id is not None}
    taken = listing.taken_client_ids(conversations, client_ids) if client_ids else []
    stored = list(Message.select().where(Message.id.in_(taken))) if taken else []
    return conversations, {(m["conversationId"], m["clientMessageId"]): m for m in _messages_wire(stored)}


def _look_before_store(sends: list[tuple["Draft", Actor]]) -> list[tuple[bool, Any]]:
    """What ``chat_message_before_store`` needs to know of each send, for a batch of them: per
    send ``(True, (conversation, the message stored under its clientMessageId or None))``, or
    ``(False, the error)`` when the caller may not write there."""
    conversations, stored = _read_for_sends(sends)
    outcomes: list[tuple[bool, Any]] = []
    for _, _, conversation, key in _each_writable(sends, conversations, outcomes):
        outcomes.append((True, (conversation_wire(conversation, []), stored.get(key))))
    return outcomes


def _each_writable(sends: list[tuple["Draft", Actor]], conversations: dict[str, listing.ConversationRow],
                   outcomes: list[tuple[bool, Any]]) -> Iterator[tuple["Draft", Actor, listing.ConversationRow, tuple[str, str]]]:
    """Each send whose caller may write to its conversation, with that conversation and the
    send's ``(conversation id, clientMessageId)`` key, in order; a refused send's error is
    appended to ``outcomes`` in its place."""
    for draft, actor in sends:
        try:
            conversation = _readable(conversations.get(draft.conversation_id), actor, write=True)
        except ApiError as error:
            outcomes.append((False, error))
            continue
        yield draft, actor, conversation, (conversation.id, draft.client_message_id or "")


def _insert_plain(sends: list[tuple["Draft", Actor]]) -> list[tuple[bool, Any]]:
    """``_insert_user_messages`` for messages without parentId or files, inside its
    transaction: read the conversations and the clientMessageIds already taken in two queries,
    decide each send in Python, then one INSERT of every message, one UPDATE statement per
    conversation (executemany) and the search entries. Messages are built as their wire
    shapes, never as models (a model computes every field's default, ids and clocks included)."""
    conversations, taken = _read_for_sends(sends)  # their rows locked by _insert_user_messages
    seqs = _latest_seqs(conversations)
    stamp = now()
    outcomes: list[tuple[bool, Any]] = []
    added: list[dict[str, Any]] = []
    touched: dict[str, int] = {}  # conversation id -> messages added
    for draft, actor, conversation, key in _each_writable(sends, conversations, outcomes):
        before = conversation_wire(conversation, [])  # as _insert_message tells it: read before the insert
        if draft.client_message_id is not None and key in taken:
            outcomes.append((True, (dict(taken[key]), False, before)))
            continue
        seqs[conversation.id] += 1
        message: dict[str, Any] = {
            "id": new_id(), "conversationId": conversation.id, "userId": actor.id, "role": "user",
            "type": draft.type, "content": draft.content, "parentId": conversation.current_message_id,
            "metadata": draft.metadata or {}, "clientMessageId": draft.client_message_id, "isEdited": False,
            "editedAt": None, "files": [], "createdAt": stamp, "updatedAt": stamp, "seq": seqs[conversation.id],
        }
        # The next message of this conversation in the batch answers this one.
        conversation.current_message_id = message["id"]
        touched[conversation.id] = touched.get(conversation.id, 0) + 1
        if draft.client_message_id is not None:
            taken[key] = message
        added.append(message)
        outcomes.append((True, (message, True, before)))
    if added:
        _insert_rows(added, stamp)
        _advance_conversations([(conversations[cid], count, seqs[cid]) for cid, count in touched.items()], stamp)
        counters.count_messages(touched, stamp)
        search.index_messages([(m["id"], m["conversationId"], conversations[m["conversationId"]].owner_id, m["content"])
                               for m in added])
    return outcomes


# The columns a new user message fills, in the order ``_insert_rows`` gives them.
_NEW_MESSAGE_FIELDS = ("id", "conversation", "user_id", "role", "type", "content", "parent_id", "metadata",
                       "client_message_id", "is_edited", "seq", "created_seq", "created_at", "updated_at")


def _insert_rows(messages: list[dict[str, Any]], stamp: Any) -> None:
    """INSERT new user messages (wire shapes, created at ``stamp``) with one statement executed
    for each (executemany): building a multi-row INSERT through the query builder cost more
    than the database's own work."""
    db = database.obj
    columns = ", ".join(Message._meta.fields[name].column_name for name in _NEW_MESSAGE_FIELDS)
    sql = (f"INSERT INTO {Message._meta.table_name} ({columns}) "
           f"VALUES ({', '.join([db.param] * len(_NEW_MESSAGE_FIELDS))})")
    when = Message.created_at.db_value(stamp)
    metadata = Message.metadata.db_value
    db.cursor().executemany(sql, [
        (m["id"], m["conversationId"], m["userId"], "user", m["type"], m["content"], m["parentId"],
         metadata(m["metadata"]) if m["metadata"] else "{}", m["clientMessageId"], False, m["seq"], m["seq"],
         when, when)
        for m in messages])


def _advance_conversations(changes: list[tuple[AnyConversation, int, int]], stamp: Any) -> None:
    """Move each conversation's leaf and last message to its newest message, count the
    messages added and set its latest seq: one statement, executed for every conversation."""
    db = database.obj
    mark = db.param
    sql = (f"UPDATE {Conversation._meta.table_name} SET current_message_id = {mark}, last_message_id = {mark}, "
           f"message_count = message_count + {mark}, seq = {mark}, updated_at = {mark} WHERE id = {mark}")
    when = Conversation.updated_at.db_value(stamp)
    params = [(c.current_message_id, c.current_message_id, added, seq, when, c.id) for c, added, seq in changes]
    db.cursor().executemany(sql, params)


class Batcher:
    """Group work on the database: what callers submit while a batch is being handled forms
    the next batch, handled by ``work`` in one database-thread call.

    ``work(items)`` answers, for each item in order, ``(True, result)`` or ``(False, the
    exception for that item's caller)``; if it raises, every item of the batch gets the error.
    One batch is in flight at a time, at most ``MAX_SEND_BATCH`` items. Used for the group
    commit of sends (``_insert_user_messages``: each send waits for the commit of the batch
    that carries it, so "acked means stored") and for the look before the store filter
    (``_look_before_store``). One by one, every send paid a database-thread hop and a
    transaction of its own, and on SQLite the database threads queued on the one write lock
    (its busy handler sleeps between tries, so the wait far exceeded the work)."""

    def __init__(self, app: App, work: Callable[[list[Any]], list[tuple[bool, Any]]]) -> None:
        self.app = app
        self.work = work
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: Any) -> Any:
        """``item``'s result, once its batch has been handled."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_SEND_BATCH], self._pending[MAX_SEND_BATCH:]
                try:
                    outcomes = await self.app.db.run(self.work, [item for item, _ in batch])
                except Exception as error:  # the whole batch failed (a send's transaction: none stored)
                    outcomes = [(False, error)] * len(batch)
                for (_, future), (ok, value) in zip(batch, outcomes):
                    if not future.done():  # done: its caller went away (a send is stored all the same)
                        future.set_result(value) if ok else future.set_exception(value)
        finally:
            self._flusher = None


# ---------------------------------------------------------------------------
# the service
# ---------------------------------------------------------------------------


class ChatService:
    """Published as ``app.service(CHAT)`` (``api.ChatService`` is what others may use of it);
    see the module docstring."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.sends = Batcher(app, _insert_user_messages)
        self.looks = Batcher(app, _look_before_store)

    def room_of(self, conversation_id: str) -> str:
        return conversation_room(conversation_id)

    # -- conversations ------------------------------------------------------------------

    async def get_conversation(self, conversation_id: str) -> dict[str, Any] | None:
        """A conversation as the API shows it, or None (no access check)."""

        def read() -> dict[str, Any] | None:
            conversation = Conversation.get_or_none(Conversation.id == conversation_id)
            return _conversations_wire([conversation])[0] if conversation else None

        found = await self.app.db.run(read)
        if found and found["lastMessage"]:
            await self._decorate([found["lastMessage"]])
        return found

    async def read_conversation(self, actor: Actor, conversation_id: str) -> dict[str, Any]:
        """A conversation ``actor`` may read, with its tags and last message; else ``NotFound``."""

        def read() -> dict[str, Any]:
            return _conversations_wire([_load_conversation(conversation_id, actor)])[0]

        found = await self.app.db.run(read)
        await self._decorate_last([found])
        return found

    async def check_access(self, actor: Actor | None, conversation_id: str, write: bool = False) -> dict[str, Any]:
        """The conversation if ``actor`` may read it (``write``: change it); else ``NotFound``
        (it may not read it) or ``Forbidden`` (it may read but not change it)."""

        def read() -> dict[str, Any]:
            conversation = _load_conversation(conversation_id, actor, write)
            return conversation_wire(conversation, listing.tags_of([conversation.id])[conversation.id])

        return await self.app.db.run(read)

    async def readable_among(self, questions: list[tuple[Actor, list[str]]]) -> list[set[str]]:
        """For each ``(actor, conversation ids)``, the ids that actor may read, in one query
        (for sockets whose permissions changed: ``rooms.recheck``)."""
        wanted = list({cid for _, ids in questions for cid in ids})

        def read() -> list[set[str]]:
            found = {c.id: c for c in Conversation.select().where(Conversation.id.in_(wanted))}
            answers = []
            for actor, ids in questions:
                readable = set()
                for cid in ids:
                    try:
                        readable.add(_readable(found.get(cid), actor, write=False).id)
                    except NotFound:
                        pass
                answers.append(readable)
            return answers

        return await self.app.db.run(read) if wanted else [set() for _ in questions]

    async def _before_conversation_store(self, actor: Actor, body: dict[str, Any], conversation_id: str | None) -> None:
        """The checks of a conversation's new fields: the metadata's size, then other
        plugins' (``chat_conversation_before_store``), before anything is written."""
        check_metadata(body)
        if self.app.hooks.implemented("chat_conversation_before_store"):
            await self.app.hooks.call("chat_conversation_before_store", changes=body, actor=actor,
                                      conversation_id=conversation_id)

    async def create_conversation(self, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
        await self._before_conversation_store(actor, body, None)

        def create() -> dict[str, Any]:
            with database.atomic():
                conversation = Conversation.create(
                    owner_id=actor.id, title=body.get("title") or DEFAULT_TITLE,
                    description=body.get("description", ""), is_public=body.get("isPublic", False),
                    is_archived=body.get("isArchived", False), metadata=body.get("metadata") or {})
                _set_tags(conversation, body.get("tags") or [])
                counters.count_conversation(conversation.id, conversation.created_at)
            return _conversations_wire([conversation])[0]

        created = await self.app.db.run(create)
        await self.app.publish(user_room(actor.id), "conversation-created", created)
        if self.app.hooks.implemented("chat_conversation_created"):
            await self.app.hooks.notify("chat_conversation_created", conversation=created, actor=actor)
        return created

    async def update_conversation(self, actor: Actor, conversation_id: str, body: dict[str, Any]) -> dict[str, Any]:
        await self._before_conversation_store(actor, body, conversation_id)
        fields = {"title": Conversation.title, "description": Conversation.description,
                  "isPublic": Conversation.is_public, "isArchived": Conversation.is_archived,
                  "metadata": Conversation.metadata}

        def update() -> tuple[bool, dict[str, Any]]:
            with database.atomic():
                conversation = _load_conversation(conversation_id, actor, write=True, lock=True)
                changes: dict[Any, Any] = {column: body[name] for name, column in fields.items() if name in body}
                current = body.get("currentMessageId")
                if current is not None:
                    if not Message.select().where(Message.id == current, Message.conversation == conversation.id,
                                                  Message.deleted_at.is_null()).exists():
                        raise ValidationFailed("currentMessageId names no message of this conversation", details=[
                            {"field": "currentMessageId", "message": "is not a message of this conversation"}])
                    changes[Conversation.current_message_id] = current
                changes[Conversation.updated_at] = now()
                Conversation.update(changes).where(Conversation.id == conversation.id).execute()
                if "tags" in body:
                    _set_tags(conversation, body["tags"])
            return conversation.is_public, _conversations_wire([Conversation.get_by_id(conversation_id)])[0]

        was_public, updated = await self.app.db.run(update)
        if was_public and not updated["isPublic"]:
            await rooms.made_private(self.app, conversation_id)
        await self._decorate_last([updated])
        await self.app.publish(user_room(updated["ownerId"]), "conversation-updated", updated)
        if self.app.hooks.implemented("chat_conversation_updated"):
            await self.app.hooks.notify("chat_conversation_updated", conversation=updated, actor=actor)
        return updated

    async def delete_conversation(self, actor: Actor, conversation_id: str) -> None:
        def delete() -> tuple[dict[str, Any], list[str]]:
            with database.atomic():
                conversation = _readable(
                    _locked(Conversation.select().where(Conversation.id == conversation_id)).first(), actor, write=True)
                wire = conversation_wire(conversation, listing.tags_of([conversation.id])[conversation.id])
                files = [row.file_id for row in MessageFile.select(MessageFile.file_id).distinct()
                         .join(Message, on=(MessageFile.message == Message.id))
                         .where(Message.conversation == conversation.id)]
                counters.uncount_conversations(Conversation.id == conversation.id)
                search.unindex_conversation(conversation.id)
                conversation.delete_instance()  # tags, messages and their file links cascade
            return wire, files

        deleted, files = await self.app.db.run(delete)
        await self.app.publish(user_room(deleted["ownerId"]), "conversation-deleted", {"conversationId": conversation_id})
        await self.app.hooks.chat_conversation_deleted.notify(conversation=deleted, actor=actor, files=files)

    async def list_conversations(self, actor: Actor, query: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The caller's conversations, a page at a time (page, limit, sortBy, sortOrder,
        search in titles, archived, tag): a constant number of queries whatever the page size
        (see ``listing``)."""
        page, limit = query["page"], query["limit"]
        items, total = await self.app.db.run(listing.read_page, actor.id, query, page, limit)
        await self._decorate_last(items)
        return items, {"page": page, "limit": limit, "total": total, "totalPages": -(-total // limit)}

    # -- messages: reading --------------------------------------------------------------

    async def get_message(self, message_id: str) -> dict[str, Any] | None:
        """A live message as the API shows it, or None (no access check)."""

        def read() -> dict[str, Any] | None:
            message = Message.get_or_none(Message.id == message_id, Message.deleted_at.is_null())
            return _messages_wire([message])[0] if message else None

        found = await self.app.db.run(read)
        if found:
            await self._decorate([found])
        return found

    async def list_messages(self, actor: Actor, conversation_id: str, *, before: str | None = None,
                            after: str | None = None, limit: int = 50) -> dict[str, Any]:
        """A page of a conversation's messages, newest first: ``before`` gives
        the ``limit`` older than it, ``after`` the ``limit`` immediately newer. ``nextCursor``
        continues in the same direction (pass it as ``after`` when paging with ``after``)."""

        def read() -> dict[str, Any]:
            _load_conversation(conversation_id, actor)
            selection = Message.select().where(Message.conversation == conversation_id, Message.deleted_at.is_null())
            if after is not None:
                rows = list(selection.where(Message.id > after).order_by(Message.id.asc()).limit(limit + 1))
                more = len(rows) > limit
                rows = rows[:limit][::-1]
                cursor = rows[0].id if more else None
            else:
                if before is not None:
                    selection = selection.where(Message.id < before)
                rows = list(selection.order_by(Message.id.desc()).limit(limit + 1))
                more = len(rows) > limit
                rows = rows[:limit]
                cursor = rows[-1].id if more else None
            return {"items": _messages_wire(rows), "nextCursor": cursor}

        page = await self.app.db.run(read)
        await self._decorate(page["items"])
        return page

    async def replay(self, actor: Actor, conversation_id: str, since: str | None,
                     since_seq: int | None = None) -> dict[str, Any]:
        """What a join answers (docs/websocket.md), but ``generation``: the messages missed
        after ``since`` (a message id) or ``since_seq`` (a change seq), oldest first, edited
        ones again, the ids deleted since, whether more were missed than one answer carries,
        and ``seq``, the conversation's latest change seq: the answer covers every change up
        to it and none after (those reach the socket live)."""

        def read() -> dict[str, Any]:
            # Read first: every change numbered up to it is committed (it is bumped in the
            # change's transaction), and the reads below leave out the later ones.
            latest = _load_conversation(conversation_id, actor).seq
            answer: dict[str, Any] = {"conversationId": conversation_id, "missed": [], "hasMore": False,
                                      "deleted": [], "seq": latest}
            in_view = (Message.conversation == conversation_id) & (Message.seq <= latest)
            if since_seq is not None:
                changed = list(Message.select().where(in_view, Message.seq > since_seq)
                               .order_by(Message.seq.asc()).limit(MAX_REPLAY_DELETED + 1))
                deleted = [m.id for m in changed if m.deleted_at is not None]
                missed = sorted((m for m in changed if m.deleted_at is None), key=lambda m: m.id)
            elif since is not None:
                mark = Message.get_or_none(Message.id == since, Message.conversation == conversation_id)
                if mark is None:
                    raise NotFound("since names no message of this conversation")
                newer = list(Message.select().where(in_view, Message.id > since, Message.deleted_at.is_null())
                             .order_by(Message.id.asc()).limit(MAX_REPLAY + 1))
                # Edited or deleted after ``since`` was written (new messages are in ``newer``).
                changed = list(Message.select().where(in_view, Message.updated_at > mark.created_at,
                                                      (Message.id <= since) | Message.deleted_at.is_null(False))
                               .order_by(Message.updated_at.asc()).limit(MAX_REPLAY_DELETED + 1))
                deleted = [m.id for m in changed if m.deleted_at is not None]
                edited = [m for m in changed if m.deleted_at is None and m.id <= since]
                missed = sorted(edited + newer, key=lambda m: m.id)
            else:
                return answer
            answer["hasMore"] = len(missed) > MAX_REPLAY or len(changed) > MAX_REPLAY_DELETED
            answer["missed"], answer["deleted"] = _messages_wire(missed[:MAX_REPLAY]), deleted
            return answer

        answer = await self.app.db.run(read)
        await self._decorate(answer["missed"])
        return answer

    async def changes_after(self, conversation_id: str, after: int) -> tuple[list[tuple[int, str, dict[str, Any]]], int]:
        """The frames of the conversation's changes numbered after ``after``, in seq order,
        and the seq they bring a reader up to. Frames are ``(seq, type, data)``:
        ``new-message``, ``message-updated`` (a message stored at or before ``after`` and
        changed since) and ``message-deleted``. A message changed several times is told once,
        as it is now, with its latest seq (so seqs may skip). At most ``MAX_REPLAY`` frames:
        when the returned seq is below the conversation's latest, ask again from it. No access
        check (a node catching its joined sockets up; their joins checked)."""

        def read() -> tuple[list[Message], list[dict[str, Any]], int]:
            conversation = Conversation.get_or_none(Conversation.id == conversation_id)
            if conversation is None:
                return [], [], after
            latest = conversation.seq  # first: every change up to it is committed
            rows = list(Message.select().where(Message.conversation == conversation_id, Message.seq > after,
                                               Message.seq <= latest)
                        .order_by(Message.seq.asc()).limit(MAX_REPLAY + 1))
            if len(rows) > MAX_REPLAY:
                rows = rows[:MAX_REPLAY]
                latest = rows[-1].seq
            return rows, _messages_wire([m for m in rows if m.deleted_at is None]), latest

        rows, wires, upto = await self.app.db.run(read)
        await self._decorate(wires)
        by_id = {m["id"]: m for m in wires}
        frames: list[tuple[int, str, dict[str, Any]]] = []
        for row in rows:
            if row.deleted_at is None:
                frames.append((row.seq, "new-message" if row.created_seq > after else "message-updated", by_id[row.id]))
            elif row.created_seq <= after:  # a message never told needs no taking back
                frames.append((row.seq, "message-deleted", deleted_frame(conversation_id, row.id, row.seq)))
        return frames, upto

    async def history(self, conversation_id: str, budget: int, *, leaf_id: str | None = None,
                      cost: Callable[[dict[str, Any]], int] | None = None) -> list[dict[str, Any]]:
        """The current branch's most recent messages that fit ``budget``, oldest first.

        The branch runs from ``leaf_id`` (default: the conversation's ``currentMessageId``)
        back through ``parentId``; each message costs ``cost(message)`` (default: the length
        of its content in characters). The newest message is included even when it alone is
        over the budget. No access check: for plugins acting for the system (the AI)."""
        measure = cost or (lambda message: len(message["content"]))

        def read() -> list[dict[str, Any]]:
            conversation = Conversation.get_or_none(Conversation.id == conversation_id)
            if conversation is None:
                raise NotFound("Conversation not found")
            wanted = leaf_id or conversation.current_message_id
            loaded: dict[str, Message] = {}
            chain: list[Message] = []
            spent = 0
            while wanted is not None:
                if wanted not in loaded:
                    # The branch's messages are older than the leaf: read a step of them at once.
                    step = (Message.select().where(Message.conversation == conversation_id, Message.id <= wanted)
                            .order_by(Message.id.desc()).limit(HISTORY_STEP))
                    loaded.update((m.id, m) for m in step)
                    if wanted not in loaded:
                        break
                message = loaded[wanted]
                if message.deleted_at is None:
                    price = measure(message_wire(message))
                    if chain and spent + price > budget:
                        break
                    spent += price
                    chain.append(message)
                wanted = message.parent_id
            return _messages_wire(chain[::-1])

        return await self.app.db.run(read)

    async def search(self, actor: Actor, text: str, *, offset: int = 0, limit: int = 20) -> dict[str, Any]:
        """The caller's conversations' messages matching every word of ``text``, best first."""

        def read() -> dict[str, Any]:
            ids = search.search_message_ids(actor.id, text, offset, limit + 1)
            more = len(ids) > limit
            ids = ids[:limit]
            found = {m.id: m for m in Message.select().where(Message.id.in_(ids))} if ids else {}
            items = _messages_wire([found[i] for i in ids if i in found])
            return {"items": items, "nextCursor": str(offset + limit) if more else None}

        result = await self.app.db.run(read)
        await self._decorate(result["items"])
        return result

    async def can_read_file(self, actor: Actor, file_id: str) -> bool:
        """Whether ``file_id`` is attached to a live message of a conversation ``actor`` may
        read (the files plugin lets such readers download it)."""

        def read() -> bool:
            rows = (Conversation.select(Conversation.id, Conversation.owner_id, Conversation.is_public)
                    .join(Message, on=(Message.conversation == Conversation.id))
                    .join(MessageFile, on=(MessageFile.message == Message.id))
                    .where(MessageFile.file_id == file_id, Message.deleted_at.is_null()).distinct())
            for conversation in rows:
                try:
                    _readable(conversation, actor, write=False)
                    return True
                except NotFound:
                    continue
            return False

        return await self.app.db.run(read)

    async def held_files(self, file_ids: Iterable[str]) -> set[str]:
        """Which of ``file_ids`` a live message holds (chat owns the message→file link,
        ``chat_message_file``; the files plugin asks before releasing a file)."""
        wanted = list(dict.fromkeys(file_ids))
        if not wanted:
            return set()

        def read() -> set[str]:
            return {row.file_id for row in MessageFile.select(MessageFile.file_id).distinct()
                    .join(Message, on=(MessageFile.message == Message.id))
                    .where(MessageFile.file_id.in_(wanted), Message.deleted_at.is_null())}

        return await self.app.db.run(read)

    # -- messages: writing --------------------------------------------------------------

    async def send_message(self, actor: Actor, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store a user's message (``POST /api/chat/message`` and ``send-message``) and tell
        the room. Returns ``(message, created)``: a retry with a clientMessageId already
        stored answers the stored message with ``created`` False (no second broadcast, no
        second AI reply), or ``Conflict`` when its content differs."""
        draft = Draft.from_body(body)
        hooks = self.app.hooks
        ai_missing = draft.requires_ai and not hooks.chat_ai_reply_requested.implemented()
        filtered: tuple[dict[str, Any], dict[str, Any]] | None = None  # (conversation, draft) the filter saw
        if ai_missing or hooks.chat_message_before_store.implemented():
            # A look first: hooks see only messages the caller may store, and never a retry.
            conversation, stored = await self.looks.submit((draft, actor))
            if stored is not None:
                return await self._retried(draft, stored), False
            if ai_missing:
                raise Conflict("An AI reply was requested but no AI plugin is enabled")
            filtered = conversation, draft.wire()
            try:
                await hooks.chat_message_before_store(conversation=conversation, message=filtered[1], actor=actor)
            except ApiError as refusal:
                await self._refused(filtered, actor, refusal)
                raise
        # The common path: access check, retry check and insert in one savepoint of a batch.
        try:
            message, created, conversation = await self.sends.submit((draft, actor))
        except Exception as failure:  # refused after the filter (deleted meanwhile, …)
            if filtered is not None:
                await self._refused(filtered, actor, failure)
            raise
        if not created:  # a retry (the unique index caught it, also when two raced)
            if filtered is not None:
                await self._refused(filtered, actor, None)
            return await self._retried(draft, message), False
        await self._decorate([message])
        await self.app.publish(conversation_room(draft.conversation_id), "new-message", message)
        await hooks.chat_message_created.notify(conversation=conversation, message=message, actor=actor)
        if draft.requires_ai:
            await hooks.chat_ai_reply_requested.notify(conversation=conversation, message=message, actor=actor)
        return message, True

    async def _refused(self, filtered: tuple[dict[str, Any], dict[str, Any]], actor: Actor,
                       error: Exception | None) -> None:
        """Tell the ``chat_message_before_store`` implementations that a message they let
        through was not stored, so that what they reserved for it is released now."""
        conversation, draft = filtered
        await self.app.hooks.chat_message_refused.notify(conversation=conversation, message=draft, actor=actor,
                                                         error=error)

    async def _retried(self, draft: Draft, stored: dict[str, Any]) -> dict[str, Any]:
        if not draft.same_as(stored):
            raise Conflict("This clientMessageId was already used for a different message")
        await self._decorate([stored])
        return stored

    async def store_assistant_message(self, conversation_id: str, content: str, *, type: str = "text",
                                      parent_id: str | None = None, metadata: dict[str, Any] | None = None,
                                      message_id: str | None = None) -> dict[str, Any]:
        """Store an assistant message (``role: assistant``, ``userId: null``) and broadcast
        ``new-message``. ``parent_id`` defaults to the conversation's current leaf; a
        regenerated reply passes the parent of the reply it replaces (a sibling branch).
        ``message_id`` lets a streaming reply announce its id before it is stored. The
        conversation's ``currentMessageId`` moves to it."""
        row, _, _ = await self.app.db.run(_insert_message, conversation_id, user_id=None, role="assistant",
                                       content=content, type=type, parent_id=parent_id, metadata=metadata,
                                       message_id=message_id)
        message = message_wire(row, [])
        await self._decorate([message])
        await self.app.publish(conversation_room(conversation_id), "new-message", message)
        if self.app.hooks.chat_message_created.implemented():
            conversation = await self.get_conversation(conversation_id)
            await self.app.hooks.chat_message_created.notify(conversation=conversation, message=message, actor=None)
        return message

    async def update_message(self, message_id: str, *, content: str | None = None, type: str | None = None,
                             metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Change a message for the system (a streamed reply's final text, an error): no
        access check, not marked edited. Broadcasts ``message-updated``."""
        changes: dict[str, Any] = {}
        if content is not None:
            changes["content"] = content
        if type is not None:
            changes["type"] = type
        if metadata is not None:
            changes["metadata"] = metadata
        return await self._change(None, message_id, changes, edited=False)

    async def edit_message(self, actor: Actor, message_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The author edits their message (``PUT /api/chat/messages/:id``): sets isEdited/editedAt."""
        check_metadata(body)
        changes: dict[str, Any] = {key: body[key] for key in ("content", "metadata") if key in body}
        return await self._change(actor, message_id, changes, edited=True)

    async def _change(self, actor: Actor | None, message_id: str, changes: dict[str, Any], *, edited: bool) -> dict[str, Any]:
        def update() -> tuple[dict[str, Any], dict[str, Any]]:
            with database.atomic():
                message = Message.get_or_none(Message.id == message_id, Message.deleted_at.is_null())
                if message is None:
                    raise NotFound("Message not found")
                conversation = _conversation_of_message(message, actor, lock=True)
                if actor is not None and message.user_id != actor.id:
                    raise Forbidden("Only the author can edit a message")
                if actor is not None:
                    _readable(conversation, actor, write=True)
                stamp = now()
                for key, value in changes.items():
                    setattr(message, key, value)
                message.updated_at = stamp
                message.seq = _next_seq(conversation)
                if edited:
                    message.is_edited, message.edited_at = True, stamp
                message.save()
                if "content" in changes:
                    search.index_message(message.id, conversation.id, conversation.owner_id, message.content, replace=True)
                return _messages_wire([message])[0], conversation_wire(conversation, [])

        message, conversation = await self.app.db.run(update)
        await self._decorate([message])
        await self.app.publish(conversation_room(message["conversationId"]), "message-updated", message)
        await self.app.hooks.chat_message_updated.notify(conversation=conversation, message=message, actor=actor)
        return message

    async def delete_message(self, actor: Actor | None, message_id: str) -> None:
        """The conversation's owner deletes any message in it (README: Chat). Soft: the row stays
        as a tombstone (see models); the conversation's count, last message and current leaf
        move off it. Broadcasts ``message-deleted``."""

        def delete() -> tuple[dict[str, Any], dict[str, Any], int]:
            with database.atomic():
                message = Message.get_or_none(Message.id == message_id, Message.deleted_at.is_null())
                if message is None:
                    raise NotFound("Message not found")
                conversation = _conversation_of_message(message, actor, write=True, lock=True)
                before = _messages_wire([message])[0]
                stamp = now()
                seq = _next_seq(conversation)
                tombstoned = Message.update(deleted_at=stamp, updated_at=stamp, content="", metadata={}, seq=seq).where(
                    Message.id == message.id, Message.deleted_at.is_null()).execute()
                if not tombstoned:  # deleted by a concurrent request since it was read (PostgreSQL)
                    raise NotFound("Message not found")
                counters.uncount_message(conversation.id, message.created_at)
                MessageFile.delete().where(MessageFile.message == message.id).execute()
                search.unindex_messages([message.id])
                changes: dict[Any, Any] = {Conversation.message_count: Conversation.message_count - 1}
                if conversation.last_message_id == message.id or conversation.current_message_id == message.id:
                    latest = (Message.select(Message.id).where(Message.conversation == conversation.id,
                                                               Message.deleted_at.is_null())
                              .order_by(Message.id.desc()).first())
                    latest_id = latest.id if latest else None
                    if conversation.last_message_id == message.id:
                        changes[Conversation.last_message_id] = latest_id
                    if conversation.current_message_id == message.id:
                        parent = message.parent_id and Message.get_or_none(
                            Message.id == message.parent_id, Message.deleted_at.is_null())
                        changes[Conversation.current_message_id] = parent.id if parent else latest_id
                Conversation.update(changes).where(Conversation.id == conversation.id).execute()
                return before, conversation_wire(conversation, []), seq

        message, conversation, seq = await self.app.db.run(delete)
        await self.app.publish(conversation_room(conversation["id"]), "message-deleted",
                               deleted_frame(conversation["id"], message_id, seq))
        await self.app.hooks.chat_message_deleted.notify(conversation=conversation, message=message, actor=actor)

    async def delete_user_data(self, user_id: str) -> None:
        """Remove a user's conversations (with all their messages) and any message they wrote
        elsewhere. Idempotent."""

        def delete() -> None:
            with database.atomic():
                owned = [c.id for c in _locked(Conversation.select(Conversation.id)
                                               .where(Conversation.owner_id == user_id).order_by(Conversation.id))]
                counters.uncount_conversations(Conversation.owner_id == user_id)
                for conversation_id in owned:
                    search.unindex_conversation(conversation_id)
                if owned:
                    Conversation.delete().where(Conversation.id.in_(owned)).execute()
                written = [m.id for m in _locked(Message.select(Message.id).where(Message.user_id == user_id))]
                search.unindex_messages(written)
                if written:
                    counters.uncount_messages(Message.user_id == user_id)  # those left: elsewhere
                    Message.delete().where(Message.id.in_(written)).execute()

        await self.app.db.run(delete)

    async def dashboard_figures(self) -> dict[str, Any]:
        """The admin dashboard's ``conversations`` and ``messages`` parts (see ``counters``)."""
        return await self.app.db.run(counters.figures)

    # -- hooks --------------------------------------------------------------------------

    async def _decorate(self, messages: list[dict[str, Any]]) -> None:
        if messages and self.app.hooks.chat_messages_decorate.implemented():
            await self.app.hooks.chat_messages_decorate.notify(messages=messages)

    async def _decorate_last(self, conversations: list[dict[str, Any]]) -> None:
        await self._decorate([c["lastMessage"] for c in conversations if c["lastMessage"]])


#: The chat plugin's own key to its service, typed as the whole class (other plugins use
#: ``api.CHAT``, typed as the ``Protocol`` they may rely on).
SERVICE: ServiceKey[ChatService] = ServiceKey(CHAT.name)
