"""Full-text search over messages: the same words found on SQLite and PostgreSQL.

Words are made here, in Python, for both the indexed text and the query, so both databases
compare exactly the same tokens and return the same hits:

- NFKD, then combining marks dropped (``é`` → ``e``) and a few letters without a
  decomposition folded (``ø`` → ``o``): accent-insensitive;
- ``casefold``: case-insensitive (``Straße`` → ``strasse``);
- words are runs of letters and digits (anything else separates them); no stemming, no stop
  words: whole words only. Words longer than ``MAX_WORD_LENGTH`` are not indexed.

Storage: SQLite keeps the normalised words in the FTS5 table ``chat_message_fts``
(unicode61 with remove_diacritics 2, which leaves our words as they are); PostgreSQL keeps a
``tsvector`` built here as ``'word':positions`` text (no text-search parser in between) in
``chat_message_search``, under a GIN index.

When entries are written: PostgreSQL writes, replaces or removes a message's entry in the
transaction that stores, edits or deletes it (its GIN index already defers the costly part:
new entries go to the index's pending list, merged in bulk). FTS5 has no such list: every
transaction that adds entries writes a segment of its own and now and then merges segments,
so one message's entry cost about 125 µs and up to 4 ms at a merge, against 16 µs an entry
50 at a time. On SQLite a stored (or edited) message is therefore only noted in
``chat_search_pending``, in its own transaction, and entries are written for the waiting
messages ``INDEX_BATCH`` at a time, as they read at that moment:

- in the transaction of the write (a send batch, a reply, an edit) that brings the count
  this process noted to ``INDEX_BATCH`` (no other transaction, so no wait on SQLite's write
  lock);
- before every search (``index_waiting``), so a search finds every message stored before it.

The table is the truth, the count only the trigger: a restart or crash loses nothing, and
a waiting message deleted (or edited) meanwhile is skipped (indexed as it reads now). Removal
is always immediate.

A query is never passed to the database as query syntax: its words are extracted as above
and the MATCH expression (each word a quoted FTS5 string) or the ``tsquery`` (each word a
quoted lexeme) is assembled from them, so quotes, operators, parentheses, NUL and empty
input cannot change what is asked. Every word must appear (AND); best match first (FTS5
``bm25``, PostgreSQL ``ts_rank``), newest first among equals.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

import peewee

from vachat.plugin_api import database

if TYPE_CHECKING:
    from .bulk import Writes

__all__ = ["words", "index_message", "index_messages", "index_waiting", "unindex_messages", "unindex_conversation",
           "search_message_ids", "MAX_QUERY_WORDS", "INDEX_BATCH"]

# Longer "words" are hashes, base64 and the like: nobody searches for them, and PostgreSQL
# refuses lexemes over 2 KiB. The same cut on both databases keeps their hits identical.
MAX_WORD_LENGTH = 100
# A query of more words than this is cut: every word is one more posting list to intersect.
MAX_QUERY_WORDS = 16
# tsvector positions stop at 16383 and at 256 per lexeme (PostgreSQL limits).
MAX_POSITION = 16383
MAX_POSITIONS_PER_WORD = 256
# SQLite: messages indexed together, in the transaction of the write that reaches this count
# (see the module docstring). One send in 1,024 carries the batch (about 10 ms). At 256 (about 2.5 ms each) the one-client
# round trip's p99 was 1.5–1.8 ms against 1.40–1.46 ms at 1,024, and each entry costs less.
INDEX_BATCH = 1024
# The most entries written in one transaction: a backlog (after a restart, before a search)
# goes a few transactions at a time.
INDEX_CHUNK = 2 * INDEX_BATCH
PENDING_TABLE = "chat_search_pending"

_WORD = re.compile(r"[^\W_]+")
# Letters NFKD leaves whole but readers treat as accented forms of a base letter.
_FOLD = str.maketrans({"ø": "o", "Ø": "o", "đ": "d", "Đ": "d", "ł": "l", "Ł": "l", "ħ": "h",
                       "Ħ": "h", "ŧ": "t", "Ŧ": "t", "ı": "i", "æ": "ae", "Æ": "ae", "œ": "oe",
                       "Œ": "oe"})


def words(text: str) -> list[str]:
    """``text``'s searchable words, in order, normalised as the module docstring says."""
    if not text:
        return []
    if text.isascii():  # nothing to fold, decompose or strip: the common case, at C speed
        return [word for word in _WORD.findall(text.lower()) if len(word) <= MAX_WORD_LENGTH]
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char))
    return [word for word in _WORD.findall(stripped.casefold()) if len(word) <= MAX_WORD_LENGTH]


def _tsvector(tokens: list[str]) -> str:
    positions: dict[str, list[str]] = {}
    for position, token in enumerate(tokens, start=1):
        if position > MAX_POSITION:
            break
        seen = positions.setdefault(token, [])
        if len(seen) < MAX_POSITIONS_PER_WORD:
            seen.append(str(position))
    # Words are letters and digits only: nothing in them needs escaping inside the quotes.
    return " ".join(f"'{token}':{','.join(at)}" for token, at in positions.items())


def _phrase(identifier: str) -> str:
    """An id as an FTS5 phrase of quoted words (ULIDs are one word). For the owner column it
    only narrows the match inside FTS5; the exact owner is checked by the join."""
    return " ".join(f'"{part}"' for part in words(identifier)) or '""'


def index_message(message_id: str, conversation_id: str, owner_id: str, content: str, *,
                  replace: bool = False) -> None:
    """Write (or with ``replace`` rewrite) a message's entry. Inside the caller's transaction."""
    if replace:
        unindex_messages([message_id])
    index_messages([(message_id, conversation_id, owner_id, content)])


def index_messages(entries: list[tuple[str, str, str, str]], writes: "Writes | None" = None) -> None:
    """``index_message`` for several new messages: ``(message id, conversation id, owner id,
    content)`` each, inside the caller's transaction. PostgreSQL: their entries, in one
    executemany or as one of a send batch's ``writes`` (``bulk``). SQLite: noted as waiting
    (see the module docstring); ``writes`` is not needed there, its statements run as given."""
    db = database.obj
    if not isinstance(db, peewee.PostgresqlDatabase):
        _note_waiting([message_id for message_id, _, _, content in entries if content])
        return
    rows = [(message_id, owner_id, _tsvector(tokens)) for message_id, _, owner_id, content in entries
            if (tokens := words(content))]
    if not rows:
        return
    if writes is not None:
        writes.insert("chat_message_search", ("message_id", "owner_id", "document"), rows)
        return
    db.cursor().executemany("INSERT INTO chat_message_search (message_id, owner_id, document) "
                            "VALUES (%s, %s, %s::tsvector)", rows)


class _Noted:
    """The messages this process noted as waiting since it last indexed them: only the
    trigger of ``INDEX_BATCH`` (a rolled-back note is counted too, a restart starts at 0)."""
    count = 0


def _note_waiting(message_ids: list[str]) -> None:
    if not message_ids:
        return
    database.obj.cursor().executemany(f"INSERT OR IGNORE INTO {PENDING_TABLE} (message_id) VALUES (?)",
                                      [(message_id,) for message_id in message_ids])
    _Noted.count += len(message_ids)
    if _Noted.count >= INDEX_BATCH:
        _index_some(INDEX_CHUNK)


def _index_some(limit: int) -> int:
    """Write the entries of up to ``limit`` waiting messages (SQLite), inside the caller's
    transaction; the number of waiting messages taken."""
    db = database.obj
    waiting = [row[0] for row in db.execute_sql(f"SELECT message_id FROM {PENDING_TABLE} LIMIT ?", (limit,))]
    _Noted.count = 0
    if not waiting:
        return 0
    marks = ", ".join("?" * len(waiting))
    live = db.execute_sql(
        "SELECT m.id, m.conversation_id, c.owner_id, m.content FROM chat_message m"
        " JOIN chat_conversation c ON c.id = m.conversation_id"
        f" WHERE m.id IN ({marks}) AND m.deleted_at IS NULL", waiting).fetchall()
    rows = [(" ".join(tokens), message_id, conversation_id, owner_id)
            for message_id, conversation_id, owner_id, content in live if (tokens := words(content))]
    if rows:
        db.cursor().executemany("INSERT INTO chat_message_fts (body, message_id, conversation_id, owner_id) "
                                "VALUES (?, ?, ?, ?)", rows)
    db.execute_sql(f"DELETE FROM {PENDING_TABLE} WHERE message_id IN ({marks})", waiting)
    return len(waiting)


def index_waiting() -> None:
    """Write the entries of every waiting message (SQLite; PostgreSQL has none), in
    transactions of ``INDEX_CHUNK``: before a search. Reads first, so a search with nothing
    waiting takes no write lock."""
    db = database.obj
    if isinstance(db, peewee.PostgresqlDatabase):
        return
    while db.execute_sql(f"SELECT 1 FROM {PENDING_TABLE} LIMIT 1").fetchone() is not None:
        with database.atomic():
            if _index_some(INDEX_CHUNK) < INDEX_CHUNK:
                return


def unindex_messages(message_ids: list[str]) -> None:
    """Remove the entries of these messages (PostgreSQL's also go with the message rows)."""
    db = database.obj
    if isinstance(db, peewee.PostgresqlDatabase):
        if message_ids:
            db.execute_sql("DELETE FROM chat_message_search WHERE message_id IN ({})".format(
                ", ".join(["%s"] * len(message_ids))), tuple(message_ids))
        return
    for message_id in message_ids:
        # An id is one word, found through the full-text index.
        db.execute_sql("DELETE FROM chat_message_fts WHERE rowid IN "
                       "(SELECT rowid FROM chat_message_fts WHERE chat_message_fts MATCH ?)",
                       (f"message_id : ({_phrase(message_id)})",))


def unindex_conversation(conversation_id: str) -> None:
    """Remove the entries of every message of a conversation (before it is deleted)."""
    db = database.obj
    if isinstance(db, peewee.PostgresqlDatabase):
        return  # the rows go with the messages (ON DELETE CASCADE)
    db.execute_sql("DELETE FROM chat_message_fts WHERE rowid IN "
                   "(SELECT rowid FROM chat_message_fts WHERE chat_message_fts MATCH ?)",
                   (f"conversation_id : ({_phrase(conversation_id)})",))


def search_message_ids(owner_id: str, query: str, offset: int, limit: int) -> list[str]:
    """Ids of the live messages of ``owner_id``'s conversations matching every word of
    ``query``, best first; empty when the query has no words."""
    tokens = list(dict.fromkeys(words(query)))[:MAX_QUERY_WORDS]
    if not tokens:
        return []
    index_waiting()
    db = database.obj
    if isinstance(db, peewee.PostgresqlDatabase):
        tsquery = " & ".join(f"'{token}'" for token in tokens)
        cursor = db.execute_sql(
            "SELECT s.message_id FROM chat_message_search s"
            " JOIN chat_message m ON m.id = s.message_id"
            " JOIN chat_conversation c ON c.id = m.conversation_id"
            " WHERE s.document @@ %s::tsquery AND s.owner_id = %s AND c.owner_id = %s AND m.deleted_at IS NULL"
            " ORDER BY ts_rank(s.document, %s::tsquery) DESC, s.message_id DESC LIMIT %s OFFSET %s",
            (tsquery, owner_id, owner_id, tsquery, limit, offset))
    else:
        match = "body : ({}) AND owner_id : ({})".format(
            " ".join(f'"{token}"' for token in tokens), _phrase(owner_id))
        cursor = db.execute_sql(
            "SELECT f.message_id FROM chat_message_fts f"
            " JOIN chat_message m ON m.id = f.message_id"
            " JOIN chat_conversation c ON c.id = m.conversation_id"
            " WHERE chat_message_fts MATCH ? AND c.owner_id = ? AND m.deleted_at IS NULL"
            " ORDER BY bm25(chat_message_fts, 1.0, 0.0, 0.0, 0.0), f.message_id DESC LIMIT ? OFFSET ?",
            (match, owner_id, limit, offset))
    return [row[0] for row in cursor.fetchall()]
