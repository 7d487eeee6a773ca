"""The query plans of ``GET /api/admin/dashboard``: every statement the request runs (caught
from Peewee's query log while the real server answers it) is read through an index, never a
scan of a table that grows with use: users, sessions, messages, conversations.

The one whole-table read allowed is ``chat_daily_count``, the chat plugin's counters: it grows
by a few rows per day of the instance's life, not with its messages.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

import pytest

from plugins.chat.tests.helpers import create_conversation, send

# Counter tables: read whole by design (bounded by days, not by use).
COUNTER_TABLES = ("chat_daily_count",)
# The indexes the dashboard's figures must be served by (named by their migrations).
EXPECTED_INDEXES = ("sessions_last_used_at_user_id", "chatdailycount_day_slot")


class QueryLog(logging.Handler):
    """Collects the (sql, params) Peewee logs at DEBUG for each statement it runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.statements: list[tuple[str, tuple]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, tuple) and len(record.msg) == 2:
            sql, params = record.msg
            self.statements.append((sql, tuple(params or ())))

    @classmethod
    @contextlib.contextmanager
    def capturing(cls) -> Iterator["QueryLog"]:
        logger = logging.getLogger("peewee")
        handler, level = cls(), logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        try:
            yield handler
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)


def explain(app: Any, sql: str, params: tuple) -> str:
    engine = app.db.engine
    if app.db.is_postgres:
        with engine.atomic():
            # Test tables are tiny, and a scan is then cheapest; switching scans off shows
            # whether an index *can* serve the query, which is what holds at any size.
            engine.execute_sql("SET LOCAL enable_seqscan = off")
            return "\n".join(row[0] for row in engine.execute_sql("EXPLAIN " + sql, params).fetchall())
    return "\n".join(row[-1] for row in engine.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall())


def reads_counters_only(sql: str) -> bool:
    return any(f'FROM "{table}"' in sql for table in COUNTER_TABLES) and "JOIN" not in sql


def whole_table_reads(plan: str) -> list[str]:
    """Lines of a plan that read a table whole: SQLite ``SCAN t`` without an index, or a
    PostgreSQL ``Seq Scan``."""
    return [line.strip() for line in plan.splitlines()
            if (line.strip().startswith("SCAN ") and "USING" not in line) or "Seq Scan" in line]


@pytest.mark.vachat(plugins=["admin", "chat"])
@pytest.mark.gen_test
async def test_every_dashboard_query_is_served_by_an_index(app, fetch, admin_user, make_user):
    for _ in range(3):
        await make_user()
    conversation = await create_conversation(fetch)
    for n in range(5):
        await send(fetch, conversation["id"], f"message {n}")
    # PostgreSQL: fresh statistics. SQLite plans by its built-in estimates, which favour
    # indexes, unless statistics exist.
    statistics = "ANALYZE" if app.db.is_postgres else "DROP TABLE IF EXISTS sqlite_stat1"
    await app.db.run(lambda: app.db.engine.execute_sql(statistics))

    with QueryLog.capturing() as log:
        response = await fetch("/api/admin/dashboard", user=admin_user)
    assert response.code == 200, response.body
    assert response.data["messages"]["total"] == 5 and response.data["users"]["active24h"] == 4  # admin + 3

    selects = [(sql, params) for sql, params in log.statements if sql.lstrip().upper().startswith("SELECT")]
    assert any("sessions" in sql and "last_used_at" in sql for sql, _ in selects), selects
    assert any("chat_daily_count" in sql for sql, _ in selects), selects
    plans = []
    for sql, params in selects:
        plan = await app.db.run(explain, app, sql, params)
        if not reads_counters_only(sql):
            assert whole_table_reads(plan) == [], (sql, plan)
        plans.append(plan)
    everything = "\n".join(plans)
    for index in EXPECTED_INDEXES:
        assert index in everything, (index, everything)
