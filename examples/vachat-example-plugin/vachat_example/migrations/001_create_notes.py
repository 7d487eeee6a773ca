"""Create the example plugin's notes table."""

from typing import Any

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False, **kwargs: Any) -> None:
    @migrator.create_model
    class Note(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        owner_id = pw.CharField(max_length=64, index=True)
        text = pw.TextField()
        created_at = pw.DateTimeField()

        class Meta:
            table_name = "example_note"


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False, **kwargs: Any) -> None:
    migrator.remove_model("example_note")
