"""Add ai_usage.reserved_tokens: tokens held by accepted requests until their replies settle."""

import peewee as pw


def migrate(migrator, database, fake=False, **kwargs):
    migrator.add_fields("ai_usage", reserved_tokens=pw.BigIntegerField(default=0))


def rollback(migrator, database, fake=False, **kwargs):
    migrator.remove_fields("ai_usage", "reserved_tokens")
