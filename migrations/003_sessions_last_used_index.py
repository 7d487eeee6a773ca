"""Index ``sessions (last_used_at, user_id)`` for the admin dashboard's ``active24h``.

The figure counts distinct users with a session used in the last 24 hours. Without an index
that is a scan of every session ever opened (revoked and expired ones stay as history); with
``last_used_at`` leading, it is a range over the recent ones, and ``user_id`` beside it lets
the count be read from the index alone (a covering index: no table rows fetched).
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.add_index("sessions", "last_used_at", "user")


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.drop_index("sessions", "last_used_at", "user")
