"""SQLite's WAL is checkpointed by a thread of its own, not inside the commits of requests."""

from __future__ import annotations

import sqlite3
import threading

from vachat import wal_checkpoints
from vachat.db import Database
from vachat.wal_checkpoints import BACKSTOP_PAGES, WalCheckpointer


def _wal_file(path):
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
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


def test_the_frames_not_yet_copied_back_are_read_from_the_wal_index(tmp_path):
    path = str(tmp_path / "wal.db")
    writer = _wal_file(path)
    checkpointer = WalCheckpointer(path)  # not started: only its reading of the -shm file
    try:
        writer.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
        pending = checkpointer._frames_pending()
        busy, frames, copied = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and pending == frames > 0  # nothing had been copied back before
        assert checkpointer._frames_pending() == 0  # all of it now
    finally:
        writer.close()
        if checkpointer._shm is not None:
            wal_checkpoints.os.close(checkpointer._shm)


def test_a_steady_stream_of_commits_is_checkpointed_by_size(tmp_path, monkeypatch):
    """Commits that never stop still get checkpointed once the WAL holds CHECKPOINT_FRAMES
    frames, long before MAX_DELAY."""
    monkeypatch.setattr(wal_checkpoints, "CHECKPOINT_FRAMES", 50)
    monkeypatch.setattr(wal_checkpoints, "MAX_DELAY", 3600.0)
    path = str(tmp_path / "wal.db")
    writer = _wal_file(path)
    stop = threading.Event()
    written = threading.Event()

    def write() -> None:
        while not stop.is_set():
            writer.execute("INSERT INTO t VALUES (?)", ("x" * 2000,))
            written.set()

    thread = threading.Thread(target=write)
    thread.start()
    checkpointer = WalCheckpointer(path)
    try:
        assert written.wait(10)
        checkpointer.start()  # its every look finds new commits: never a quiet one
        assert checkpointer.checkpointed.wait(10)
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join()
        checkpointer.stop()
        writer.close()


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
