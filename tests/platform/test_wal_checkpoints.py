"""SQLite's WAL is checkpointed by a thread of its own, not inside the commits of requests."""

from __future__ import annotations

import sqlite3

from vachat.db import Database
from vachat.wal_checkpoints import BACKSTOP_PAGES, WalCheckpointer


def _wal_file(path):
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=wal")
    connection.execute("PRAGMA wal_autocheckpoint=0")  # only the checkpointer copies pages back
    connection.execute("CREATE TABLE t (x TEXT)")
    return connection


def test_what_is_committed_is_checkpointed_by_the_thread(tmp_path):
    path = str(tmp_path / "wal.db")
    writer = _wal_file(path)
    checkpointer = WalCheckpointer(path)
    checkpointer.start()
    try:
        for _ in range(3):
            checkpointer.checkpointed.clear()
            writer.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 50)
            assert checkpointer.checkpointed.wait(10)
        busy, frames, copied = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and frames == copied  # every frame already copied back (or the WAL restarted)
        assert writer.execute("SELECT count(*) FROM t").fetchone()[0] == 150
    finally:
        checkpointer.stop()
        writer.close()
    assert checkpointer.checkpoints >= 3


def test_a_served_sqlite_file_gets_a_checkpointer_and_requests_only_a_backstop(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'app.db'}").bind()
    try:
        db.start_checkpoints()
        assert db._checkpointer is not None
        assert db.engine.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_PAGES
    finally:
        db.close()
    assert db._checkpointer._thread is None  # stopped with the database


def test_an_in_memory_database_has_no_checkpointer():
    db = Database("sqlite:///:memory:")
    db.start_checkpoints()
    assert db._checkpointer is None
    db.close()
