"""Chat's hot reads, SQL written once and rows as tuples: the conversation list
(``GET /api/chat/conversations``) and the conversations a batch of sends goes to.

The list is the most frequent read of the app and its rows are wide, so it skips the ORM's
per-query and per-row work (composing SQL, hydrating a model per row, converting through
each field): one statement reads the page with each conversation's last message joined in
and, per row, whether the conversation has tags and whether that message carries files; the
tags and the file ids are read only when some row has them (one query each). A page is
therefore 1 to 3 queries, plus a ``COUNT`` when it is not the last page, whatever its size.

Reading a page costs more CPU than the rest of a list request together (20 rows: 105-140 µs
alone, most of it the values' conversion to Python objects and the dicts built from them), so
a page read is kept (``ListCache``, per ``ChatService``: per process and database) and
answered again while the owner's list version still holds: a number the database raises, by
triggers, in the transaction of every change that can change that owner's pages, whoever
makes it (see migration ``005_list_versions``). ``cached_page`` reads the version first, then
the page only when the one kept is of another version: one primary-key read instead of the
page (20 rows, ``thread_time`` in one process: 18 µs answered from the cache, of which the
version 3 and the copy 13, against 106 µs read). The version is read before the page, so a
page kept under a version is at least as new as it: a change committed in between raises the
version and only costs the next request a read. What is kept is never handed out: each answer
is a copy (``_copy_page``), down to every mutable value a page holds (the shape is
``read_page``'s, so the copy is complete without a generic deep copy: ``copy.deepcopy`` of 20
items costs 200 µs, more than reading them, and an ``orjson`` round trip 32), because the
``chat_messages_decorate`` hook changes the messages it is given in place and every reader
must get its own objects.

A send batch reads its conversations with ``conversations_by_id`` (``ConversationRow``s,
the model's fields without the model: composing the query and hydrating models cost
Peewee about 15 µs per conversation, SQLite under 2) and the messages already stored under
their clientMessageIds with ``taken_client_ids``.

The wire shapes are exactly those of ``wire.conversation_wire`` and ``wire.message_shape``,
with the values as the models' fields give them (booleans, JSON), but timestamps: those are
already the text the wire carries for them (``_wire_time``).
Runs on a database thread, inside ``app.db.run``.
"""

from __future__ import annotations

import copy
import datetime
import json
import threading
from collections import OrderedDict
from typing import Any, Iterable

import orjson
import peewee

from vachat.plugin_api import database

from .models import Conversation, ConversationRow, ConversationTag, Message, MessageFile
from .wire import message_shape

__all__ = ["read_page", "cached_page", "ListCache", "ConversationRow", "conversations_by_id", "taken_client_ids",
           "tags_of", "files_of"]

# The whitelisted orders (``sortBy``), each served by an index (see models).
SORT_COLUMNS = {"updatedAt": "updated_at", "createdAt": "created_at", "title": "title"}
# ``str(datetime)`` with microseconds, as SQLite stores a timestamp column: 2026-01-02 03:04:05.678901
SQLITE_TIME_LENGTH = 26
# What a ``ListCache`` counts for a page beyond its JSON size (key and entry).
PAGE_OVERHEAD = 512
LIST_VERSION_TABLE = "chat_list_version"
# The LIKE escape character of the title search (``%`` and ``_`` typed by a user are literal).
LIKE_ESCAPE = "\\"

_CONVERSATION_FIELDS = ("id", "owner_id", "title", "description", "is_public", "is_archived", "metadata",
                        "current_message_id", "message_count", "created_at", "updated_at", "last_message_id")
# The list reads less: each page row's owner and archived flag are the values its WHERE
# matched (``_where``), and the last message id is only joined on. Turning the page's SQLite
# values into Python objects costs about as much as SQLite's own work on the page, per value.
_PAGE_CONVERSATION_FIELDS = ("id", "title", "description", "is_public", "metadata", "current_message_id",
                             "message_count", "created_at", "updated_at")
_MESSAGE_FIELDS = ("id", "conversation", "user_id", "role", "type", "content", "parent_id", "metadata",
                   "client_message_id", "is_edited", "edited_at", "created_at", "updated_at", "seq")


def _column(model: type[peewee.Model], name: str) -> str:
    column: str = model._meta.fields[name].column_name
    return column


def _wire_time(value: Any) -> str | None:
    """A stored timestamp as the wire writes it (``wire.json_dumps``: ISO 8601, milliseconds,
    ``Z``), straight from the column. SQLite keeps ``str(datetime)`` of a naive UTC datetime
    (see ``now``): ``YYYY-MM-DD HH:MM:SS[.ffffff]``, rewritten without parsing (encoding
    datetimes through the encoder's fallback was the list's largest JSON cost); PostgreSQL
    gives naive UTC datetimes."""
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) == SQLITE_TIME_LENGTH:
            return f"{value[:10]}T{value[11:23]}Z"
        value = datetime.datetime.fromisoformat(value)  # no fraction stored (or another form)
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    stamp: datetime.datetime = value
    return stamp.isoformat(timespec="milliseconds") + "Z"


def _json(value: Any) -> Any:
    """``JSONField.python_value``; most metadata is empty."""
    if value is None:
        return None
    return {} if value == "{}" else json.loads(value)


_SELECT = "SELECT {c}, EXISTS(SELECT 1 FROM {tags} t WHERE t.{tag_conversation} = c.id), {m}, " \
          "EXISTS(SELECT 1 FROM {files} f WHERE f.{file_message} = m.id) " \
          "FROM {conversations} c LEFT JOIN {messages} m ON m.id = c.{last}".format(
              c=", ".join(f"c.{_column(Conversation, n)}" for n in _PAGE_CONVERSATION_FIELDS),
              m=", ".join(f"m.{_column(Message, n)}" for n in _MESSAGE_FIELDS),
              tags=ConversationTag._meta.table_name, tag_conversation=_column(ConversationTag, "conversation"),
              files=MessageFile._meta.table_name, file_message=_column(MessageFile, "message"),
              conversations=Conversation._meta.table_name, messages=Message._meta.table_name,
              last=_column(Conversation, "last_message_id"))
_PAGE_CONVERSATION_WIDTH = len(_PAGE_CONVERSATION_FIELDS)
_CONVERSATION_WIDTH = len(_CONVERSATION_FIELDS)


def _stored_time(value: Any) -> datetime.datetime:
    """A timestamp column as ``DateTimeField`` gives it: SQLite keeps the text of a naive UTC
    datetime, PostgreSQL gives the datetime."""
    return datetime.datetime.fromisoformat(value) if isinstance(value, str) else value


def _marks(count: int) -> str:
    return ", ".join([database.obj.param] * count)


def conversations_by_id(conversation_ids: Iterable[str], *, lock: bool = False,
                        seqs: dict[str, int] | None = None) -> dict[str, ConversationRow]:
    """The conversations of these ids that exist, by id. ``lock``: their rows held until the
    transaction ends, taken in id order (PostgreSQL's ``FOR UPDATE``; see ``store.locked``).
    ``seqs``: filled with each one's latest change seq, read by the same query."""
    ids = sorted(conversation_ids) if lock else list(conversation_ids)
    if not ids:
        return {}
    columns = ", ".join(_column(Conversation, name) for name in _CONVERSATION_FIELDS)
    if seqs is not None:
        columns += f", {_column(Conversation, 'seq')}"
    sql = f"SELECT {columns} FROM {Conversation._meta.table_name} WHERE id IN ({_marks(len(ids))})"
    if lock and isinstance(database.obj, peewee.PostgresqlDatabase):
        sql += " ORDER BY id FOR UPDATE"
    rows = database.obj.execute_sql(sql, ids).fetchall()
    if seqs is not None:
        seqs.update((row[0], row[_CONVERSATION_WIDTH]) for row in rows)
    return {row[0]: ConversationRow(
        row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]), {} if row[6] == "{}" else _json(row[6]) or {},
        row[7], row[8], _stored_time(row[9]), _stored_time(row[10]), row[11]) for row in rows}


def taken_client_ids(conversation_ids: Iterable[str], client_ids: Iterable[str]) -> list[str]:
    """Ids of the messages of these conversations stored under any of these clientMessageIds."""
    conversations, clients = list(conversation_ids), list(client_ids)
    if not conversations or not clients:
        return []
    rows = database.obj.execute_sql(
        f"SELECT id FROM {Message._meta.table_name} WHERE {_column(Message, 'conversation')} IN "
        f"({_marks(len(conversations))}) AND client_message_id IN ({_marks(len(clients))})", conversations + clients)
    return [row[0] for row in rows]


def _where(owner_id: str, query: dict[str, Any], mark: str) -> tuple[str, list[Any]]:
    """The page's filters (owner, archived, tag, title search) as SQL and parameters."""
    clauses = [f"c.owner_id = {mark}", f"c.is_archived = {mark}"]
    params: list[Any] = [owner_id, bool(query.get("archived", False))]
    if query.get("tag"):
        clauses.append(f"c.id IN (SELECT t.{_column(ConversationTag, 'conversation')} FROM "
                       f"{ConversationTag._meta.table_name} t WHERE t.owner_id = {mark} AND t.tag = {mark})")
        params += [owner_id, query["tag"]]
    if query.get("search"):
        # Case-insensitive substring, as Peewee's ``contains``: ILIKE on PostgreSQL, LIKE
        # (ASCII case-insensitive) on SQLite.
        like = "ILIKE" if isinstance(database.obj, peewee.PostgresqlDatabase) else "LIKE"
        clauses.append(f"c.title {like} {mark} ESCAPE '{LIKE_ESCAPE}'")
        text = query["search"]
        for special in (LIKE_ESCAPE, "%", "_"):
            text = text.replace(special, LIKE_ESCAPE + special)
        params.append(f"%{text}%")
    return " AND ".join(clauses), params


def read_page(owner_id: str, query: dict[str, Any], page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The conversations of ``owner_id`` on ``page`` (``limit`` a page) as the API shows them
    (``lastMessage`` undecorated), and the total matching."""
    db = database.obj
    mark = db.param
    where, params = _where(owner_id, query, mark)
    archived = bool(query.get("archived", False))  # as _where matches it
    column = SORT_COLUMNS[query.get("sortBy") or "updatedAt"]
    direction = "DESC" if query.get("sortOrder", "desc") == "desc" else "ASC"
    # One row more than the page: when it is not there, this page is the last one and the
    # total follows from it, without a COUNT (most lists fit on their first page).
    sql = f"{_SELECT} WHERE {where} ORDER BY c.{column} {direction}, c.id {direction} LIMIT {mark} OFFSET {mark}"
    rows = db.execute_sql(sql, (*params, limit + 1, (page - 1) * limit)).fetchall()
    if len(rows) <= limit and (rows or page == 1):
        total = (page - 1) * limit + len(rows)
    else:
        total = db.execute_sql(f"SELECT COUNT(*) FROM {Conversation._meta.table_name} c WHERE {where}",
                               params).fetchone()[0]
    rows = rows[:limit]
    split = _PAGE_CONVERSATION_WIDTH
    tagged = [row[0] for row in rows if row[split]]
    with_files = [row[split + 1] for row in rows if row[split + 1] is not None and row[-1]]
    tags = tags_of(tagged)
    files = files_of(with_files)
    items = []
    # The loop below is the list's own Python work (20 rows of 25 columns): the common values
    # (empty metadata, never edited, created = updated, no files) skip their conversions.
    for (cid, title, description, is_public, metadata, current_id, count, created, updated,
         _has_tags, mid, conversation_id, user_id, role, type_, content, parent_id, message_metadata,
         client_id, is_edited, edited_at, message_created, message_updated, message_seq, _has_files) in rows:
        last = None
        if mid is not None:
            message_time = _wire_time(message_created)
            last = message_shape(
                mid, conversation_id, user_id, role, type_, content, parent_id,
                {} if message_metadata == "{}" else _json(message_metadata) or {}, client_id, bool(is_edited),
                None if edited_at is None else _wire_time(edited_at), files.get(mid, []), message_time,
                message_time if message_updated == message_created else _wire_time(message_updated), message_seq)
        created_time = _wire_time(created)
        items.append({
            "id": cid, "ownerId": owner_id, "title": title, "description": description, "isPublic": bool(is_public),
            "isArchived": archived, "tags": tags.get(cid, []),
            "metadata": {} if metadata == "{}" else _json(metadata) or {},
            "currentMessageId": current_id, "messageCount": count, "lastMessage": last,
            "createdAt": created_time, "updatedAt": created_time if updated == created else _wire_time(updated),
        })
    return items, total


def _grouped(model: type[peewee.Model], key: str, value: str, order: str, ids: list[str]) -> dict[str, list[str]]:
    """``{id: [value, …]}`` for every id in ``ids`` (empty lists included), read in one
    written-once statement ordered by ``order``."""
    grouped: dict[str, list[str]] = {item: [] for item in ids}
    if not grouped:
        return grouped
    column = _column(model, key)
    marks = ", ".join([database.obj.param] * len(grouped))
    for owner, item in database.obj.execute_sql(
            f"SELECT {column}, {value} FROM {model._meta.table_name} WHERE {column} IN ({marks}) "
            f"ORDER BY {column}, {order}", list(grouped)):
        grouped[owner].append(item)
    return grouped


def tags_of(conversation_ids: list[str]) -> dict[str, list[str]]:
    """Each conversation's tags, alphabetically."""
    return _grouped(ConversationTag, "conversation", "tag", "tag", conversation_ids)


def files_of(message_ids: list[str]) -> dict[str, list[str]]:
    """Each message's file ids, in the order they were attached."""
    return _grouped(MessageFile, "message", "file_id", "position", message_ids)


class ListCache:
    """Pages read by ``read_page``, least recently used first: ``{key: (version, items,
    total, size)}``. At most ``max_bytes`` (the ``list_cache_bytes`` setting; 0 keeps
    nothing), counted as the JSON size of each page plus ``PAGE_OVERHEAD``; a page larger
    than an eighth of it is not kept. The objects of a page take about twice its JSON size
    (20 conversations with 300-character last messages: 19.6 KB of JSON, 37.8 KB allocated,
    tracemalloc), so the default 16 MiB holds about 32 MiB. The items are never handed out
    (``cached_page`` copies them). Shared by the database threads, hence the lock (held for
    dict operations only)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0  # bytes held, as counted against max_bytes
        self._pages: OrderedDict[tuple[Any, ...], tuple[int, list[dict[str, Any]], int, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pages)

    def get(self, key: tuple[Any, ...], version: int) -> tuple[list[dict[str, Any]], int] | None:
        with self._lock:
            kept = self._pages.get(key)
            if kept is None or kept[0] != version:
                return None
            self._pages.move_to_end(key)
        return kept[1], kept[2]

    def put(self, key: tuple[Any, ...], version: int, items: list[dict[str, Any]], total: int, size: int) -> None:
        size += PAGE_OVERHEAD
        if size > self.max_bytes // 8:
            return
        with self._lock:
            old = self._pages.get(key)
            if old is not None:
                if old[0] > version:  # another thread kept a newer read meanwhile: keep it
                    return
                del self._pages[key]
                self.size -= old[3]
            self._pages[key] = (version, items, total, size)
            self.size += size
            while self.size > self.max_bytes:
                _, dropped = self._pages.popitem(last=False)
                self.size -= dropped[3]


def list_version(owner_id: str) -> int:
    """The owner's list version (0 before any change since migration 005)."""
    row = database.obj.execute_sql(
        f"SELECT version FROM {LIST_VERSION_TABLE} WHERE owner_id = {database.obj.param}", (owner_id,)).fetchone()
    return 0 if row is None else int(row[0])


def _copy_metadata(value: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(value) if value else {}  # most metadata is empty


def _copy_page(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of ``read_page``'s items sharing no mutable object with them: the conversation
    and message dicts, tag and file lists, file entries and metadata are new; every other
    value is a str, int, bool or None."""
    return [{**c, "tags": list(c["tags"]), "metadata": _copy_metadata(c["metadata"]),
             "lastMessage": None if (m := c["lastMessage"]) is None else {
                 **m, "metadata": _copy_metadata(m["metadata"]), "files": [dict(f) for f in m["files"]]}}
            for c in items]


def cached_page(cache: ListCache, owner_id: str, query: dict[str, Any], page: int,
                limit: int) -> tuple[list[dict[str, Any]], int]:
    """``read_page``'s answer, from ``cache`` when the page kept there is of the owner's
    current list version (see the module docstring). The key holds every value that shapes
    the page, as ``read_page`` and ``_where`` read them."""
    version = list_version(owner_id)  # before the page: what is kept is at least this new
    key = (owner_id, bool(query.get("archived", False)), query.get("tag") or None, query.get("search") or None,
           SORT_COLUMNS[query.get("sortBy") or "updatedAt"], query.get("sortOrder", "desc") == "desc", page, limit)
    kept = cache.get(key, version)
    if kept is not None:
        return _copy_page(kept[0]), kept[1]
    items, total = read_page(owner_id, query, page, limit)
    try:
        size = len(orjson.dumps(items))
    except orjson.JSONEncodeError:  # metadata orjson does not write (an integer past 64 bits): not kept
        return items, total
    cache.put(key, version, items, total, size)
    return _copy_page(items), total
