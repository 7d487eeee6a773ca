"""SQLite's WAL checkpoints, moved off the request path onto a thread of their own.

In WAL mode a commit appends pages to the ``-wal`` file; a *checkpoint* copies them back
into the database file and fsyncs both. By default SQLite runs one inside the commit that
takes the WAL past ``wal_autocheckpoint`` pages (1,000): that commit's caller waits for the
copy and two fsyncs. A chat message writes ≈ 17 pages (the row, its indexes, its search
entry, the conversation, the counters), so one send in ≈ 60 paid several milliseconds: the
round trip's 99th percentile (issue #19: ``strace -c`` counted 15 ``fdatasync`` per 580
messages, and the slowest sends' database call was 8-16 ms instead of 0.4).

``WalCheckpointer`` runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection soon after
anything was committed (``PRAGMA data_version`` tells it, without touching the disk). A
passive checkpoint takes no lock a writer needs: commits go on appending to the WAL while it
copies, and the next commit after a complete one starts the WAL over. The commits' own
durability is unchanged (``synchronous=normal``: a commit is not fsynced, a checkpoint is,
exactly as before); only who waits for the checkpoint changes. The connections that serve
requests keep an automatic checkpoint as a backstop (``BACKSTOP_PAGES``), should this thread
fall behind.

This module must never hold a lock a request needs, nor stop the process from exiting.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

__all__ = ["WalCheckpointer", "BACKSTOP_PAGES", "ACTIVE_INTERVAL", "IDLE_INTERVAL"]

log = logging.getLogger("vachat.db")

# Seconds between looks while commits keep coming: at ≈ 1,000 messages/s from one client the
# WAL then grows ≈ 1,000 pages between checkpoints, what SQLite's own default allows.
ACTIVE_INTERVAL = 0.05
# After each look that found nothing committed the wait doubles, up to this: an idle server
# wakes this thread once a second.
IDLE_INTERVAL = 1.0
# ``wal_autocheckpoint`` of the connections that serve requests: ten times SQLite's default,
# so a request pays a checkpoint only when this thread cannot keep up (≈ 40 MB of WAL).
BACKSTOP_PAGES = 10_000
# How long the checkpointer's connection waits for a lock it needs (ms). A passive checkpoint
# gives up at once on a busy lock anyway; this only covers opening the file.
BUSY_TIMEOUT_MS = 1000


class WalCheckpointer:
    """A daemon thread checkpointing the WAL of the SQLite file at ``path`` (see the module
    docstring). ``start`` once; ``stop`` once, at shutdown (waits for a checkpoint running)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0  # how many ran (tests, diagnostics)
        self.checkpointed = threading.Event()  # set after each one

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vachat-wal-checkpoints", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            log.warning("WAL checkpoints: cannot open %s; SQLite checkpoints inside commits", self.path,
                        exc_info=True)
            return
        try:
            connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            seen = None
            wait = ACTIVE_INTERVAL
            while not self._stopping.wait(wait):
                version = connection.execute("PRAGMA data_version").fetchone()[0]
                if version == seen:
                    wait = min(wait * 2, IDLE_INTERVAL)
                    continue
                seen, wait = version, ACTIVE_INTERVAL
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.checkpoints += 1
                self.checkpointed.set()
        except sqlite3.Error:
            # A broken file or a closed database: the request path's automatic checkpoint
            # (BACKSTOP_PAGES) still bounds the WAL.
            log.warning("WAL checkpoints stopped; SQLite checkpoints inside commits", exc_info=True)
        finally:
            connection.close()
