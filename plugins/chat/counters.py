"""The admin dashboard's chat figures, kept as counters instead of counted on each view.

``chat_daily_count`` (``models.DailyCount``) holds, per UTC day of creation, how many live
messages and conversations there are. Every write that adds or removes them changes the
counters in its own transaction (``count_*`` / ``uncount_*``, or ``uncounts_of_*`` then ``apply``), so the
figures are exact after every commit, and the dashboard reads a handful of counter rows
whatever the number of messages: the total sums at most ``COUNTER_SLOTS`` rows per day the
instance has existed, the last seven days are a range of the ``(day, slot)`` index.

What counts: a message from its creation until it is deleted. A deleted message (a tombstone,
see ``models``) does not count, on its day of creation, just as it leaves the conversation's
``messageCount``; so "messages on day D" is the messages created on D that still exist, and
deleting an old message lowers that old day's figure.

Every function here runs inside the caller's transaction on a database thread.

Lock order (PostgreSQL): a transaction changes counter rows *last*, after every write to
conversations, tags, messages and their files. Those writes raise their owner's list
version (``migrations/005_list_versions``: a row lock held until commit), so a transaction
that took a counter row first and then an owner's version could deadlock with a send batch
of the same owner that holds the version and waits for the counter (one slot in
``COUNTER_SLOTS``: PostgreSQL aborts one of them). A deletion therefore reads what it takes
off the counters first (``uncounts_of_conversations`` / ``uncounts_of_messages``: reads
lock no counter) and ``apply``-s it once its deletes are done.
"""

from __future__ import annotations

import collections
import datetime
import zlib
from typing import TYPE_CHECKING, Any

from peewee import fn

from vachat.plugin_api import database, new_id, now

from .models import Conversation, DailyCount, Message

if TYPE_CHECKING:
    from .bulk import Writes

__all__ = ["COUNTER_SLOTS", "DASHBOARD_DAYS", "Change", "slot_of", "count_message", "count_messages",
           "count_conversation", "uncount_message", "uncounts_of_messages", "uncounts_of_conversations", "apply",
           "figures"]

# A change to one counter row: (day, slot, messages added, conversations added).
Change = tuple[datetime.date, int, int, int]

# Rows each day's counters are spread over. Message writes on PostgreSQL hold their counter row
# until commit; spread over 8 rows, writers to different conversations rarely queue behind one
# another (the database pool holds 8 connections by default).
COUNTER_SLOTS = 8
# The dashboard's per-day series: today and the six days before it (UTC).
DASHBOARD_DAYS = 7


def slot_of(conversation_id: str) -> int:
    """The counter slot of a conversation: stable across processes (unlike ``hash``)."""
    return zlib.crc32(conversation_id.encode()) % COUNTER_SLOTS


def _add(day: datetime.date, slot: int, *, messages: int = 0, conversations: int = 0) -> None:
    _add_all([(day, slot, messages, conversations)])


def _add_all(changes: list[Change]) -> None:
    """Add each ``(day, slot, messages, conversations)`` to its counter row, creating the row
    the first time: one upsert statement, executed for every change (written once, not
    composed per call: a batch of sends touches up to ``COUNTER_SLOTS`` rows)."""
    db = database.obj
    table, mark = DailyCount._meta.table_name, db.param
    sql = (f"INSERT INTO {table} (id, day, slot, messages, conversations) VALUES ({mark}, {mark}, {mark}, {mark}, {mark}) "
           f"ON CONFLICT (day, slot) DO UPDATE SET messages = {table}.messages + excluded.messages, "
           f"conversations = {table}.conversations + excluded.conversations")
    db.cursor().executemany(sql, [(new_id(), DailyCount.day.db_value(day), slot, messages, conversations)
                                  for day, slot, messages, conversations in changes])


def count_message(conversation_id: str, created_at: datetime.datetime) -> None:
    _add(created_at.date(), slot_of(conversation_id), messages=1)


def count_messages(added: dict[str, int], created_at: datetime.datetime, writes: "Writes | None" = None) -> None:
    """``count_message`` for a batch stored at ``created_at``: ``{conversation id: messages}``,
    one change per counter slot touched; with ``writes``, as one of a send batch's writes
    (``bulk``)."""
    per_slot: collections.Counter[int] = collections.Counter()
    for conversation_id, count in added.items():
        per_slot[slot_of(conversation_id)] += count
    # In a fixed order: concurrent batches never deadlock.
    changes = [(created_at.date(), slot, count, 0) for slot, count in sorted(per_slot.items())]
    if writes is None:
        _add_all(changes)
        return
    table = DailyCount._meta.table_name
    writes.insert(table, ("id", "day", "slot", "messages", "conversations"),
                  [(new_id(), DailyCount.day.db_value(day), slot, messages, conversations)
                   for day, slot, messages, conversations in changes],
                  f"ON CONFLICT (day, slot) DO UPDATE SET messages = {table}.messages + excluded.messages, "
                  f"conversations = {table}.conversations + excluded.conversations")


def uncount_message(conversation_id: str, created_at: datetime.datetime) -> None:
    _add(created_at.date(), slot_of(conversation_id), messages=-1)


def count_conversation(conversation_id: str, created_at: datetime.datetime) -> None:
    _add(created_at.date(), slot_of(conversation_id), conversations=1)


def _as_date(value: Any) -> datetime.date:
    # SQLite's date() gives 'YYYY-MM-DD' text (or, through Peewee, a datetime), PostgreSQL's a date.
    if isinstance(value, datetime.datetime):
        return value.date()
    return value if isinstance(value, datetime.date) else datetime.date.fromisoformat(str(value)[:10])


def uncounts_of_messages(condition: Any) -> list[Change]:
    """What taking the live messages matching ``condition`` off their days' counts changes,
    for ``apply`` once they are deleted (one grouped query, whatever their number; read before
    the delete, applied after it: see the lock order above)."""
    day = fn.DATE(Message.created_at)
    rows = (Message.select(Message.conversation, day, fn.COUNT(Message.id))
            .where(condition, Message.deleted_at.is_null())
            .group_by(Message.conversation, day).tuples())
    removed: collections.Counter[tuple[datetime.date, int]] = collections.Counter()
    for conversation_id, created, count in rows:
        removed[(_as_date(created), slot_of(conversation_id))] += count
    return [(created, slot, -count, 0) for (created, slot), count in removed.items()]


def uncounts_of_conversations(condition: Any) -> list[Change]:
    """``uncounts_of_messages`` for the conversations matching ``condition`` and every live
    message in them. The caller holds their rows (``FOR UPDATE`` on PostgreSQL) until it
    applies the changes, so no message arrives or goes uncounted in between."""
    changes = uncounts_of_messages(Message.conversation.in_(Conversation.select(Conversation.id).where(condition)))
    for conversation_id, created_at in (Conversation.select(Conversation.id, Conversation.created_at)
                                        .where(condition).tuples()):
        changes.append((created_at.date(), slot_of(conversation_id), 0, -1))
    return changes


def apply(changes: list[Change]) -> None:
    """Add ``changes`` (from ``uncounts_of_*``) to their counter rows, merged per row and in
    row order: concurrent transactions take counter rows in one order and never deadlock."""
    merged: dict[tuple[datetime.date, int], list[int]] = {}
    for day, slot, messages, conversations in changes:
        totals = merged.setdefault((day, slot), [0, 0])
        totals[0] += messages
        totals[1] += conversations
    if merged:
        _add_all([(day, slot, messages, conversations)
                  for (day, slot), (messages, conversations) in sorted(merged.items())])


def figures() -> dict[str, Any]:
    """The dashboard's ``conversations`` and ``messages`` parts, from the counters alone."""
    today = now().date()
    days = [today - datetime.timedelta(days=back) for back in range(DASHBOARD_DAYS - 1, -1, -1)]
    messages, conversations = (DailyCount.select(fn.COALESCE(fn.SUM(DailyCount.messages), 0),
                                                 fn.COALESCE(fn.SUM(DailyCount.conversations), 0))
                               .tuples().get())
    recent = dict(DailyCount.select(DailyCount.day, fn.SUM(DailyCount.messages))
                  .where(DailyCount.day >= days[0], DailyCount.day <= today)
                  .group_by(DailyCount.day).tuples())
    per_day = {_as_date(day): int(count) for day, count in recent.items()}
    return {"conversations": {"total": int(conversations)},
            "messages": {"total": int(messages),
                         "perDay": [{"date": day.isoformat(), "count": per_day.get(day, 0)} for day in days]}}
