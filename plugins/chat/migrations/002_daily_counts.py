"""Add ``chat_daily_count`` (plugins.chat.models.DailyCount, plugins.chat.counters): live
messages and conversations per UTC day of creation, for the admin dashboard.

Existing rows are counted once here, into slot 0 (any slot will do: a day's figure is the sum
of its slots), with the same rule the application keeps from then on: deleted (tombstone)
messages do not count. ``date(created_at)`` is SQLite's date function and PostgreSQL's cast
to ``date``; both give the UTC day, timestamps being stored in UTC.
"""

import datetime

import peewee as pw
from peewee_migrate import Migrator

# Rows per INSERT of the backfill (a day each): far below either database's parameter limit.
BACKFILL_CHUNK = 500


def _per_day(database: pw.Database, table: str, live_only: bool) -> dict[datetime.date, int]:
    where = " WHERE deleted_at IS NULL" if live_only else ""
    rows = database.execute_sql(f"SELECT date(created_at), COUNT(*) FROM {table}{where} GROUP BY date(created_at)")
    return {datetime.date.fromisoformat(str(day)[:10]): count for day, count in rows}


def _backfill(database: pw.Database) -> None:
    from vachat.plugin_api import new_id

    messages = _per_day(database, "chat_message", live_only=True)
    conversations = _per_day(database, "chat_conversation", live_only=False)
    rows = [{"id": new_id(), "day": day, "slot": 0, "messages": messages.get(day, 0),
             "conversations": conversations.get(day, 0)}
            for day in sorted(messages.keys() | conversations.keys())]
    table = pw.Table("chat_daily_count", ("id", "day", "slot", "messages", "conversations"))
    for start in range(0, len(rows), BACKFILL_CHUNK):
        table.insert(rows[start:start + BACKFILL_CHUNK]).bind(database).execute()


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    @migrator.create_model
    class ChatDailyCount(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        day = pw.DateField()
        slot = pw.SmallIntegerField()
        messages = pw.BigIntegerField(default=0)
        conversations = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "chat_daily_count"
            indexes = ((("day", "slot"), True),)

    migrator.run(_backfill, database)


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    migrator.remove_model("chat_daily_count")
