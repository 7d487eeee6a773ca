"""The files plugin's table: one row per stored file (plugins.files.models.File).

Hand-written, and a snapshot of the model as it was when this migration was written. Only
portable column types, so it runs on SQLite and PostgreSQL alike. ``owner_id`` is a plain
indexed column, not a foreign key into the core's users table: the plugin removes a user's
files itself (``vachat_user_deleting``), disk objects included, which a cascade could not.
"""

import datetime

import peewee as pw
from peewee_migrate import Migrator


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Create files_file."""

    @migrator.create_model
    class File(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        owner_id = pw.CharField(max_length=64, index=True)
        original_name = pw.CharField(max_length=255)
        stored_name = pw.CharField(max_length=128, unique=True)
        mime_type = pw.CharField(max_length=100)
        size = pw.BigIntegerField()
        sha256 = pw.CharField(max_length=64)
        purpose = pw.CharField(max_length=32, default="general")
        is_public = pw.BooleanField(default=False)
        description = pw.TextField(null=True)
        download_count = pw.IntegerField(default=0)
        public_token = pw.CharField(max_length=64, null=True, unique=True)
        created_at = pw.DateTimeField(default=_now)
        updated_at = pw.DateTimeField(default=_now)

        class Meta:
            table_name = "files_file"
            indexes = ((("owner_id", "created_at"), False),)


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Drop files_file."""
    migrator.remove_model("files_file")
