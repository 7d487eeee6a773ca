"""Drop files_attachment: which message holds which file is the chat plugin's fact
(``chat_message_file``, written in the message's transaction), and the files plugin asks the
chat service for it instead of keeping a second copy. Nothing is lost: every row here had its
twin in chat's table.

Rollback recreates the table (as 002 made it) and fills it again from chat's links of live
messages, when the chat plugin's tables are there. Portable across SQLite and PostgreSQL.
"""

import datetime

import peewee as pw
from peewee_migrate import Migrator


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Drop files_attachment."""
    migrator.remove_model("files_attachment")


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Recreate files_attachment from chat_message_file."""

    @migrator.create_model
    class Attachment(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        file_id = pw.CharField(max_length=26, index=True)
        message_id = pw.CharField(max_length=64, index=True)
        conversation_id = pw.CharField(max_length=64, index=True)
        created_at = pw.DateTimeField(default=_now)

        class Meta:
            table_name = "files_attachment"
            indexes = ((("message_id", "file_id"), True),)

    if not fake and database.table_exists("chat_message_file") and database.table_exists("chat_message"):
        migrator.sql(
            "INSERT INTO files_attachment (id, file_id, message_id, conversation_id, created_at) "
            "SELECT f.id, f.file_id, f.message_id, m.conversation_id, m.created_at "
            "FROM chat_message_file f JOIN chat_message m ON m.id = f.message_id "
            "WHERE m.deleted_at IS NULL")
