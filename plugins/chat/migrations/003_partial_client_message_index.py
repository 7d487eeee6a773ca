"""Keep only messages that carry a ``clientMessageId`` in its unique index.

Most messages have none (every assistant reply, and clients that do not retry), yet each
paid an entry in ``(conversation_id, client_message_id)``: on SQLite a fifth B-tree written
per message, about a fifth of what storing one costs. The index is now partial
(``WHERE client_message_id IS NOT NULL``); uniqueness is unchanged, since both databases
already let any number of NULLs share a unique index, and lookups by clientMessageId (an
``=`` or ``IN`` on it, which implies NOT NULL) still use it.
"""

import peewee as pw
from peewee_migrate import Migrator

INDEX = "chatmessage_conversation_id_client_message_id"


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    migrator.sql(f"DROP INDEX {INDEX}")
    migrator.sql(f"CREATE UNIQUE INDEX {INDEX} ON chat_message (conversation_id, client_message_id) "
                 "WHERE client_message_id IS NOT NULL")


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    migrator.sql(f"DROP INDEX {INDEX}")
    migrator.sql(f"CREATE UNIQUE INDEX {INDEX} ON chat_message (conversation_id, client_message_id)")
