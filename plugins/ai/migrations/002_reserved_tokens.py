"""Add ai_usage.reserved_tokens: tokens held by accepted requests until their replies settle."""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    migrator.add_fields("ai_usage", reserved_tokens=pw.BigIntegerField(default=0))


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    migrator.remove_fields("ai_usage", "reserved_tokens")
