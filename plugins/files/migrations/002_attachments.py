"""Which chat message and conversation hold a file (plugins.files.models.Attachment), so that
deleting a message or a conversation releases the files uploaded for it. A snapshot, portable
across SQLite and PostgreSQL; no foreign keys into the chat plugin's tables (it may be absent).
"""

import datetime

import peewee as pw
from peewee_migrate import Migrator


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Create files_attachment."""

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


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Drop files_attachment."""
    migrator.remove_model("files_attachment")
