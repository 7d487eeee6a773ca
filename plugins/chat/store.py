"""Chat's store: the queries and writes behind ``ChatService``, run on database threads
(inside ``app.db.run``), one transaction per write: the access rules a query applies
(``readable``), row locks and change seqs, and the message inserts, one by one
(``insert_message``) or a send batch at a time (``insert_user_messages``).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, TypeVar

import peewee

from vachat.plugin_api import Actor, ApiError, Forbidden, NotFound, ValidationFailed, database, new_id, now

from . import counters, listing, search
from .bulk import Writes
from .models import Conversation, ConversationTag, Message, MessageFile
from .wire import AnyConversation, Draft, conversation_wire, message_shape, message_wire

__all__ = ["READ_ALL", "readable", "load_conversation", "conversation_of_message", "locked", "next_seq",
           "messages_wire", "conversations_wire", "set_tags", "insert_message", "insert_user_messages",
           "look_before_store"]

log = logging.getLogger("vachat.plugins.chat")

READ_ALL = "conversations.read_all"

# A conversation as a model or as the listing's row: ``readable`` hands back what it was given.
C = TypeVar("C", Conversation, listing.ConversationRow)


def readable(conversation: C | None, actor: Actor | None, write: bool) -> C:
    if conversation is None:
        raise NotFound("Conversation not found")
    if actor is None or conversation.owner_id == actor.id:
        return conversation
    if not (conversation.is_public or actor.has(READ_ALL)):
        raise NotFound("Conversation not found")
    if write:
        raise Forbidden("Only the owner can change this conversation")
    return conversation


def load_conversation(conversation_id: str, actor: Actor | None, write: bool = False,
                       lock: bool = False) -> Conversation:
    """The conversation if ``actor`` may read it (``write``: change it); ``lock`` holds its
    row until the transaction ends (see ``locked``)."""
    query = Conversation.select().where(Conversation.id == conversation_id)
    found: Conversation | None = (locked(query) if lock else query).first()
    return readable(found, actor, write)


def conversation_of_message(message: Message, actor: Actor | None, write: bool = False,
                             lock: bool = False) -> Conversation:
    """``load_conversation`` for an operation on ``message``: a conversation the caller may not
    read answers "Message not found", like a message that does not exist, so the answer never
    tells whether an id is a message in someone else's conversation."""
    try:
        return load_conversation(message.conversation_id, actor, write=write, lock=lock)
    except NotFound:
        raise NotFound("Message not found") from None


def locked(query: peewee.Select) -> peewee.Select:
    """``query`` holding its rows until the transaction ends, on PostgreSQL: a delete that
    counts a conversation's messages must not miss one stored (or deleted) meanwhile, and a
    message stored on another node must not be given the leaf another transaction is moving
    (both would answer the same message: a fork nobody asked for). SQLite needs nothing: its
    write transactions already run one at a time (BEGIN IMMEDIATE)."""
    return query.for_update() if isinstance(database.obj, peewee.PostgresqlDatabase) else query


def next_seq(conversation: Conversation) -> int:
    """Take the conversation's next change seq, inside the change's transaction; the caller
    holds the conversation's row lock (``load_conversation(lock=True)``)."""
    seq = int(conversation.seq) + 1
    Conversation.update(seq=seq).where(Conversation.id == conversation.id).execute()
    conversation.seq = seq
    return seq


def messages_wire(messages: list[Message]) -> list[dict[str, Any]]:
    files = listing.files_of([m.id for m in messages])
    return [message_wire(m, files[m.id]) for m in messages]


def conversations_wire(conversations: list[Conversation]) -> list[dict[str, Any]]:
    """Conversations with tags and last message: three queries, whatever their number."""
    tags = listing.tags_of([c.id for c in conversations])
    last_ids = [c.last_message_id for c in conversations if c.last_message_id]
    last = {m["id"]: m for m in messages_wire(list(Message.select().where(Message.id.in_(last_ids))))} \
        if last_ids else {}
    return [conversation_wire(c, tags[c.id], last.get(c.last_message_id)) for c in conversations]


def set_tags(conversation: Conversation, tags: list[str]) -> None:
    ConversationTag.delete().where(ConversationTag.conversation == conversation.id).execute()
    if tags:
        ConversationTag.insert_many([
            {"id": new_id(), "conversation": conversation.id, "owner_id": conversation.owner_id, "tag": tag}
            for tag in dict.fromkeys(tags)]).execute()


def insert_message(conversation_id: str, *, user_id: str | None, role: str, draft: Draft | None = None,
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
        conversation = load_conversation(conversation_id, actor, write=True, lock=True)
        if parent_id is None:
            parent_id = conversation.current_message_id
        elif not Message.select().where(Message.id == parent_id, Message.conversation == conversation_id,
                                        Message.deleted_at.is_null()).exists():
            raise ValidationFailed("parentId names no message of this conversation",
                                   details=[{"field": "parentId", "message": "is not a message of this conversation"}])
        stamp = now()
        seq = conversation.seq + 1  # read under the row lock (see locked)
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
        if draft is not None and draft.files:
            MessageFile.insert_many([{"id": new_id(), "message": message.id, "file_id": file_id, "position": index}
                                     for index, file_id in enumerate(draft.files)]).execute()
        (Conversation.update(current_message_id=message.id, last_message_id=message.id,
                             message_count=Conversation.message_count + 1, seq=seq, updated_at=stamp)
         .where(Conversation.id == conversation_id).execute())
        search.index_message(message.id, conversation_id, conversation.owner_id, content)
        counters.count_message(conversation_id, stamp)  # last: see counters' lock order
    return message, True, conversation_wire(conversation, [])


def insert_user_messages(sends: list[tuple[Draft, Actor]]) -> list[tuple[bool, Any]]:
    """Store several users' messages in one transaction (see ``Batcher``): per send,
    ``(True, (message, created, conversation))`` (the wire shapes: the stored message, and
    the conversation as read before the insert; ``created`` False for a retry), or
    ``(False, the exception that refused it)``. Nothing is reported before the commit, and a
    failed commit fails them all.

    Plain messages (no parentId, no files) go in bulk (``_insert_plain``): a constant number of
    statements for the whole batch. The others, and all of them if the bulk insert meets a
    clientMessageId stored meanwhile (by another node: PostgreSQL only), go one by one, each in
    a savepoint so that one refused leaves the rest alone."""
    outcomes: list[tuple[bool, Any] | None] = [None] * len(sends)
    with database.atomic():
        # Every conversation of the batch is locked first, in id order, before any counter row
        # (see ``locked``): a transaction that then waits only waits for rows locked in the
        # same order, so two nodes' batches (or two batches in flight, see ``Batcher``) never
        # deadlock. The same query reads them, as they are once the lock is held.
        seqs: dict[str, int] = {}
        conversations = listing.conversations_by_id({draft.conversation_id for draft, _ in sends}, lock=True,
                                                    seqs=seqs)
        plain = [index for index, (draft, _) in enumerate(sends) if draft.parent_id is None and not draft.files]
        if plain:
            done: list[tuple[bool, Any]] | None = None
            if isinstance(database.obj, peewee.SqliteDatabase):
                # No savepoint: it is there for a clientMessageId stored by another node between
                # the read and the insert, and on SQLite nobody else writes until this
                # transaction ends (BEGIN IMMEDIATE), so that cannot happen; any other
                # IntegrityError is a fault that fails the whole batch, rolled back. (The
                # savepoint cost a single send ≈ 30 µs of 170: two statements, prepared anew
                # each time as Peewee names each savepoint afresh.)
                done = _insert_plain([sends[index] for index in plain], conversations, seqs)
            else:
                try:
                    with database.atomic():
                        done = _insert_plain([sends[index] for index in plain], conversations, seqs)
                except peewee.IntegrityError:
                    log.info("a clientMessageId of a batch was stored meanwhile: storing its messages one by one")
            if done is not None:
                for index, outcome in zip(plain, done):
                    outcomes[index] = outcome
        for index, (draft, actor) in enumerate(sends):
            if outcomes[index] is not None:
                continue
            try:
                with database.atomic():
                    row, created, conversation = insert_message(draft.conversation_id, user_id=actor.id, role="user",
                                                                 draft=draft, actor=actor)
                message = message_wire(row, draft.files) if created else messages_wire([row])[0]
                outcomes[index] = (True, (message, created, conversation))
            except Exception as error:  # told to that send's caller alone
                outcomes[index] = (False, error)
    return outcomes  # type: ignore[return-value]


def _read_for_sends(sends: list[tuple[Draft, Actor]], conversations: dict[str, listing.ConversationRow] | None = None,
                    ) -> tuple[dict[str, listing.ConversationRow], dict[tuple[str, str], dict[str, Any]]]:
    """The conversations ``sends`` go to, by id (read here unless given), and the messages
    already stored under their clientMessageIds (wire shapes), by ``(conversation id,
    clientMessageId)``: one query, or two when sends carry clientMessageIds, three when some
    are retries."""
    if conversations is None:
        conversations = listing.conversations_by_id({draft.conversation_id for draft, _ in sends})
    client_ids = {draft.client_message_id for draft, _ in sends if draft.client_message_id is not None}
    taken = listing.taken_client_ids(conversations, client_ids) if client_ids else []
    stored = list(Message.select().where(Message.id.in_(taken))) if taken else []
    return conversations, {(m["conversationId"], m["clientMessageId"]): m for m in messages_wire(stored)}


def look_before_store(sends: list[tuple[Draft, Actor]]) -> list[tuple[bool, Any]]:
    """What ``chat_message_before_store`` needs to know of each send, for a batch of them: per
    send ``(True, (conversation, the message stored under its clientMessageId or None))``, or
    ``(False, the error)`` when the caller may not write there."""
    conversations, stored = _read_for_sends(sends)
    outcomes: list[tuple[bool, Any]] = []
    for _, _, conversation, key in _each_writable(sends, conversations, outcomes):
        outcomes.append((True, (conversation_wire(conversation, []), stored.get(key))))
    return outcomes


def _each_writable(sends: list[tuple[Draft, Actor]], conversations: dict[str, listing.ConversationRow],
                   outcomes: list[tuple[bool, Any]]) -> Iterator[tuple[Draft, Actor, listing.ConversationRow, tuple[str, str]]]:
    """Each send whose caller may write to its conversation, with that conversation and the
    send's ``(conversation id, clientMessageId)`` key, in order; a refused send's error is
    appended to ``outcomes`` in its place."""
    for draft, actor in sends:
        try:
            conversation = readable(conversations.get(draft.conversation_id), actor, write=True)
        except ApiError as error:
            outcomes.append((False, error))
            continue
        yield draft, actor, conversation, (conversation.id, draft.client_message_id or "")


def _insert_plain(sends: list[tuple[Draft, Actor]], locked_conversations: dict[str, listing.ConversationRow],
                  seqs: dict[str, int]) -> list[tuple[bool, Any]]:
    """``insert_user_messages`` for messages without parentId or files, inside its
    transaction, given their conversations and latest seqs (read under their row locks): read
    the clientMessageIds already taken, decide each send in Python, then the batch's writes
    (``bulk.Writes``): the messages, the conversations' leaves, counters and seqs, the search
    entries. Messages are built as their wire shapes, never as models (a model computes every
    field's default, ids and clocks included)."""
    conversations, taken = _read_for_sends(sends, locked_conversations)
    stamp = now()
    outcomes: list[tuple[bool, Any]] = []
    added: list[dict[str, Any]] = []
    touched: dict[str, int] = {}  # conversation id -> messages added
    for draft, actor, conversation, key in _each_writable(sends, conversations, outcomes):
        before = conversation_wire(conversation, [])  # as insert_message tells it: read before the insert
        if draft.client_message_id is not None and key in taken:
            outcomes.append((True, (dict(taken[key]), False, before)))
            continue
        seqs[conversation.id] += 1
        message = message_shape(new_id(), conversation.id, actor.id, "user", draft.type, draft.content,
                                conversation.current_message_id, draft.metadata or {}, draft.client_message_id,
                                False, None, [], stamp, stamp, seqs[conversation.id])
        # The next message of this conversation in the batch answers this one.
        conversation.current_message_id = message["id"]
        touched[conversation.id] = touched.get(conversation.id, 0) + 1
        if draft.client_message_id is not None:
            taken[key] = message
        added.append(message)
        outcomes.append((True, (message, True, before)))
    if added:
        writes = Writes()
        _insert_rows(added, stamp, writes)
        _advance_conversations([(conversations[cid], count, seqs[cid]) for cid, count in touched.items()], stamp,
                               writes)
        search.index_messages([(m["id"], m["conversationId"], conversations[m["conversationId"]].owner_id, m["content"])
                               for m in added], writes)
        counters.count_messages(touched, stamp, writes)  # last: see counters' lock order
        writes.send()
    return outcomes


# The columns a new user message fills, in the order ``_insert_rows`` gives them.
_NEW_MESSAGE_COLUMNS = tuple(Message._meta.fields[name].column_name for name in (
    "id", "conversation", "user_id", "role", "type", "content", "parent_id", "metadata", "client_message_id",
    "is_edited", "seq", "created_seq", "created_at", "updated_at"))


def _insert_rows(messages: list[dict[str, Any]], stamp: Any, writes: Writes) -> None:
    """INSERT new user messages (wire shapes, created at ``stamp``): one statement for all of
    them (``bulk``), written once: building it through the query builder cost more than the
    database's own work."""
    when = Message.created_at.db_value(stamp)
    metadata = Message.metadata.db_value
    writes.insert(Message._meta.table_name, _NEW_MESSAGE_COLUMNS, [
        (m["id"], m["conversationId"], m["userId"], "user", m["type"], m["content"], m["parentId"],
         metadata(m["metadata"]) if m["metadata"] else "{}", m["clientMessageId"], False, m["seq"], m["seq"],
         when, when)
        for m in messages])


def _advance_conversations(changes: list[tuple[AnyConversation, int, int]], stamp: Any, writes: Writes) -> None:
    """Move each conversation's leaf and last message to its newest message, count the
    messages added and set its latest seq: one statement for every conversation (PostgreSQL:
    an UPDATE from the rows ``bulk`` sends; SQLite: one UPDATE executed for each)."""
    table = Conversation._meta.table_name
    when = Conversation.updated_at.db_value(stamp)
    if writes.is_postgres:
        # The rows as the table's own type: message_count carries the number of messages added.
        writes.add(f"UPDATE {table} AS c SET current_message_id = v.current_message_id, "
                   "last_message_id = v.current_message_id, message_count = c.message_count + v.message_count, "
                   f"seq = v.seq, updated_at = v.updated_at FROM json_populate_recordset(NULL::{table}, %s) AS v "
                   "WHERE c.id = v.id", ("id", "current_message_id", "message_count", "seq", "updated_at"),
                   [(c.id, c.current_message_id, added, seq, when) for c, added, seq in changes])
        return
    mark = writes.db.param
    sql = (f"UPDATE {table} SET current_message_id = {mark}, last_message_id = {mark}, "
           f"message_count = message_count + {mark}, seq = {mark}, updated_at = {mark} WHERE id = {mark}")
    writes.db.cursor().executemany(sql, [(c.current_message_id, c.current_message_id, added, seq, when, c.id)
                                         for c, added, seq in changes])
