"""Create the AI plugin's usage table: tokens per user and UTC day."""

from typing import Any

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False, **kwargs: Any) -> None:
    @migrator.create_model
    class AiUsage(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        user_id = pw.CharField(max_length=64)
        day = pw.DateField()
        prompt_tokens = pw.BigIntegerField(default=0)
        completion_tokens = pw.BigIntegerField(default=0)
        generations = pw.IntegerField(default=0)

        class Meta:
            table_name = "ai_usage"
            indexes = ((("user_id", "day"), True), (("day",), False))


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False, **kwargs: Any) -> None:
    migrator.remove_model("ai_usage")
