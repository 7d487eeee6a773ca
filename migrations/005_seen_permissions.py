"""``seen_permissions``: the permissions this database has seen declared.

A plugin may declare default grants (``Permission("notes.write", grant_to=("user",))``); they
are applied once, the first time the permission is seen, and the name is recorded here so that
an operator's later revoke is not undone at the next start. Existing databases start empty:
every permission declared at the next start counts as first seen (its default grants apply).
"""

import datetime

import peewee as pw
from peewee_migrate import Migrator


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    @migrator.create_model
    class SeenPermission(pw.Model):
        id = pw.CharField(primary_key=True, max_length=128)
        seen_at = pw.DateTimeField(default=_now)

        class Meta:
            table_name = "seen_permissions"


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_model("seen_permissions")
