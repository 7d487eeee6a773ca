"""The quota's lock rows and upload reservations (plugins.files.models.Usage, Reservation).
A snapshot, portable across SQLite and PostgreSQL.
"""

import datetime

import peewee as pw
from peewee_migrate import Migrator


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Create files_usage and files_reservation."""

    @migrator.create_model
    class Usage(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        owner_id = pw.CharField(max_length=64, unique=True)

        class Meta:
            table_name = "files_usage"

    @migrator.create_model
    class Reservation(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        owner_id = pw.CharField(max_length=64, index=True)
        size = pw.BigIntegerField()
        created_at = pw.DateTimeField(default=_now)

        class Meta:
            table_name = "files_reservation"


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Drop files_reservation and files_usage."""
    migrator.remove_model("files_reservation")
    migrator.remove_model("files_usage")
