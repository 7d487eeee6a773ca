"""PostgreSQL transactions with their bookkeeping held (``vachat.db.PostgresDatabase``):
BEGIN and savepoints travel with the next statement, and a transaction still commits, rolls
back and rolls back to a savepoint exactly as Peewee's ``atomic`` says, whatever was held."""

from __future__ import annotations

import peewee
import pytest

from vachat.db import PostgresDatabase, connect_url
from vachat.testing import needs_postgres

pytestmark = needs_postgres


class Counted:
    """A driver cursor that counts the round trips (``execute`` calls) made through it."""

    def __init__(self, cursor, calls: list[str]) -> None:
        self._cursor, self._calls = cursor, calls

    def execute(self, sql, params=None):
        self._calls.append(sql if isinstance(sql, str) else sql.decode())
        return self._cursor.execute(sql, params)

    def __getattr__(self, name):
        return getattr(self._cursor, name)


@pytest.fixture
def db(vachat_database_url, monkeypatch):
    database = connect_url(vachat_database_url, pool_size=1)
    assert isinstance(database, PostgresDatabase)
    database.connect()
    database.execute_sql("DROP TABLE IF EXISTS held_test")
    database.execute_sql("CREATE TABLE held_test (id integer PRIMARY KEY)")
    calls: list[str] = []
    plain_cursor = peewee.PostgresqlDatabase.cursor

    def counted(self, named_cursor=None):
        return Counted(plain_cursor(self), calls)

    monkeypatch.setattr(peewee.PostgresqlDatabase, "cursor", counted)
    yield database, calls
    monkeypatch.undo()
    database.execute_sql("DROP TABLE held_test")
    database.close_all()


def ids(database) -> list[int]:
    return [row[0] for row in database.execute_sql("SELECT id FROM held_test ORDER BY id").fetchall()]


def test_begin_and_savepoints_travel_with_the_next_statement(db):
    database, calls = db
    with database.atomic():
        database.execute_sql("INSERT INTO held_test VALUES (%s)", (1,))
        with database.atomic():
            database.execute_sql("INSERT INTO held_test VALUES (%s)", (2,))
    # BEGIN with the first insert, the savepoint with the second, its release with the COMMIT.
    assert len(calls) == 3 and calls[0].startswith("BEGIN; INSERT") and calls[1].startswith("SAVEPOINT ")
    assert calls[2].startswith("RELEASE SAVEPOINT ") and calls[2].endswith("COMMIT")
    assert ids(database) == [1, 2]
    assert database.connection().get_transaction_status() == 0  # idle: nothing left open


def test_a_transaction_that_ran_nothing_sends_nothing(db):
    database, calls = db
    with database.atomic():
        with database.atomic():
            pass
    with pytest.raises(RuntimeError):
        with database.atomic():
            raise RuntimeError("before any statement")
    assert calls == []


def test_a_failed_statement_rolls_back_to_its_savepoint_and_the_rest_commits(db):
    database, _ = db
    with database.atomic():
        database.execute_sql("INSERT INTO held_test VALUES (%s)", (1,))
        with pytest.raises(peewee.IntegrityError):
            with database.atomic():
                database.execute_sql("INSERT INTO held_test VALUES (%s)", (3,))
                database.execute_sql("INSERT INTO held_test VALUES (%s)", (1,))  # taken
        database.execute_sql("INSERT INTO held_test VALUES (%s)", (2,))
    assert ids(database) == [1, 2]


def test_a_savepoint_never_sent_is_forgotten_and_the_transaction_goes_on(db):
    database, calls = db
    with database.atomic():
        with pytest.raises(RuntimeError):
            with database.atomic():  # its SAVEPOINT is still held when it is rolled back
                raise RuntimeError("refused in Python")
        database.execute_sql("INSERT INTO held_test VALUES (%s)", (1,))
    assert ids(database) == [1] and not any("SAVEPOINT" in call for call in calls)


def test_a_rollback_undoes_what_ran_through_a_raw_cursor(db):
    database, calls = db
    with pytest.raises(RuntimeError):
        with database.atomic():
            database.cursor().executemany("INSERT INTO held_test VALUES (%s)", [(1,), (2,)])
            raise RuntimeError("undo")
    assert calls[0] == "BEGIN"  # sent on its own, before the raw statement
    assert ids(database) == []
