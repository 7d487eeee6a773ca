"""SQLite: add ``chat_search_pending``, the messages waiting for their search entry.

FTS5 writes a segment for every transaction that adds entries, so a message's entry written
in its own transaction cost about 125 µs (up to 4 ms when segments merge), against 16 µs an
entry written 50 at a time. A stored or edited message is now noted here, in its
transaction, and its entry is written later with others (``search``: in a send's
transaction once enough wait, and before every search). One column, the message id, as the
key of a table without rowid: one small B-tree per note.

PostgreSQL gets nothing: its GIN index keeps a pending list of its own.

Rolling back writes the waiting messages' entries first, from their content as SQLite's
tokenizer reads it (close to ``search.words``, which a migration cannot import), so no
message drops out of search.
"""

import peewee as pw
from peewee_migrate import Migrator

TABLE = "chat_search_pending"


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    if not isinstance(database, pw.PostgresqlDatabase):
        migrator.sql(f"CREATE TABLE {TABLE} (message_id VARCHAR(26) PRIMARY KEY NOT NULL) WITHOUT ROWID")


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    if isinstance(database, pw.PostgresqlDatabase):
        return
    migrator.sql("INSERT INTO chat_message_fts (body, message_id, conversation_id, owner_id)"
                 " SELECT lower(m.content), m.id, m.conversation_id, c.owner_id"
                 f" FROM {TABLE} p JOIN chat_message m ON m.id = p.message_id"
                 " JOIN chat_conversation c ON c.id = m.conversation_id"
                 " WHERE m.deleted_at IS NULL AND m.content != ''")
    migrator.sql(f"DROP TABLE {TABLE}")
