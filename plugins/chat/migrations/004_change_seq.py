"""Add per-conversation change sequence numbers (plugins.chat.models): ``chat_conversation.seq``
(the latest), ``chat_message.seq`` (the message's latest change) and ``created_seq`` (its
store), with the ``(conversation_id, seq)`` index that "every change after seq N" reads.

Existing rows keep 0: they were all delivered before sequence numbers existed, and a client
asking for the changes after seq 0 gets those made from now on (a join with ``since``, a
message id, still replays by id).
"""

import peewee as pw
from peewee_migrate import Migrator


# Plain ALTER TABLE on both databases (SQLite 3.35+ drops columns in place): a migrator that
# rebuilds ``chat_conversation`` to drop a column would drop the old table, and with it, through
# ON DELETE CASCADE, every message.
COLUMNS = (("chat_conversation", "seq"), ("chat_message", "seq"), ("chat_message", "created_seq"))
INDEX = "chatmessage_conversation_id_seq"


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    for table, column in COLUMNS:
        migrator.sql(f"ALTER TABLE {table} ADD COLUMN {column} BIGINT NOT NULL DEFAULT 0")
    migrator.sql(f"CREATE INDEX {INDEX} ON chat_message (conversation_id, seq)")


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    migrator.sql(f"DROP INDEX {INDEX}")
    for table, column in COLUMNS:
        migrator.sql(f"ALTER TABLE {table} DROP COLUMN {column}")
