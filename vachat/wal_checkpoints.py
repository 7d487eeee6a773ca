"""SQLite's WAL checkpoints, moved off the request path onto a thread of their own.

In WAL mode a commit appends pages to the ``-wal`` file; a *checkpoint* copies them back
into the database file and fsyncs both. By default SQLite runs one inside the commit that
takes the WAL past ``wal_autocheckpoint`` pages (1,000): that commit's caller waits for the
copy and two fsyncs. A chat message writes ≈ 17 pages (the row, its indexes, its search
entry, the conversation, the counters), so one send in ≈ 60 paid several milliseconds: the
round trip's 99th percentile (issue #19: ``strace -c`` counted 15 ``fdatasync`` per 580
messages, and the slowest sends' database call was 8-16 ms instead of 0.4).

``WalCheckpointer`` runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection. A
passive checkpoint takes no lock a writer needs: commits go on appending to the WAL while it
copies, and the next commit after a complete one starts the WAL over. The commits' own
durability is unchanged (``synchronous=normal``: a commit is not fsynced, a checkpoint is,
exactly as before); only who waits for the checkpoint changes. The connections that serve
requests keep an automatic checkpoint as a backstop (``BACKSTOP_PAGES``), should this thread
fall behind.

When: the thread looks every ``ACTIVE_INTERVAL`` while commits come (``PRAGMA data_version``
tells it, without touching the disk) and checkpoints

- once commits stop (a look that finds nothing new committed): a quiet server has its WAL
  copied back and fsynced ≈ ``ACTIVE_INTERVAL`` after its last commit, as before;
- while they keep coming, once the WAL holds ``CHECKPOINT_FRAMES`` frames not yet copied
  back, or ``MAX_DELAY`` after the first commit not yet checkpointed, whichever comes first.

A checkpoint copies each page once, however many frames the WAL holds of it, and fsyncs: the
same pages (a conversation's row, the counters, the rightmost leaves of every index, the
search index's structure record) are written by every message, so a checkpoint every 50 ms
under a steady stream (what this did before) copied them ≈ 20 times a second, 3-5 ms each. The frame count is read from the WAL-index header at the start of the
``-shm`` file (``mxFrame`` and ``nBackfill``, whose layout SQLite documents as part of its
file format); read without a lock it is a hint, and a file that cannot be read leaves
``MAX_DELAY`` alone to decide. Under a steady stream the frames not yet copied back stay
below ≈ ``CHECKPOINT_FRAMES`` plus what one ``ACTIVE_INTERVAL`` adds (the file itself grows to
``BACKSTOP_PAGES``, see below), and at most ``MAX_DELAY`` of commits wait for the fsync that
a checkpoint brings (a power loss can take those, as it could
take ``ACTIVE_INTERVAL``'s before; a crash of the process loses none).

What this thread cannot do under a steady stream is start the WAL over: a passive checkpoint
is complete (fsyncs the database file, lets the next commit restart the WAL) only if nothing
was committed while it copied and fsynced, and a stream commits every millisecond or so. The
WAL then grows until a request's commit passes ``BACKSTOP_PAGES`` and checkpoints the
remainder itself, holding the write lock, and the next commit restarts the WAL (measured:
once every ≈ 550 one-message sends, ≈ 3.5 ms and ≈ 0.8 ms on those two sends, the fsyncs
mostly). Finishing it here would need the write lock for those fsyncs (a ``FULL``
checkpoint), which delays a send just as much, with the busy handler's sleeps on top.

This module must never hold a lock a request needs, nor stop the process from exiting.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
import time

__all__ = ["WalCheckpointer", "BACKSTOP_PAGES", "ACTIVE_INTERVAL", "IDLE_INTERVAL", "CHECKPOINT_FRAMES", "MAX_DELAY"]

log = logging.getLogger("vachat.db")

# Seconds between looks while commits keep coming (each look reads ``data_version`` and the
# WAL-index header: microseconds, no disk access).
ACTIVE_INTERVAL = 0.05
# While commits keep coming, checkpoint once the WAL holds this many frames not yet copied back
# (≈ 16 MB of 4 KiB pages, ≈ 200 one-message transactions; well under ``BACKSTOP_PAGES``, so
# two passes usually run before a request's commit reaches it). Offline, one send per
# transaction on a migrated file of 50,000 messages: checkpoints every 50 ms cost ≈ 31 µs of
# CPU per message, at this size ≈ 21 µs.
CHECKPOINT_FRAMES = 4096
# ... or this long (s) after the first commit not yet checkpointed, if that comes first: a
# slower stream still has its commits fsynced by a checkpoint within this.
MAX_DELAY = 0.5
# After each look that found nothing committed the wait doubles, up to this: an idle server
# wakes this thread once a second.
IDLE_INTERVAL = 1.0
# ``wal_autocheckpoint`` of the connections that serve requests: ten times SQLite's default,
# so a request pays a checkpoint only when this thread cannot keep up (≈ 40 MB of WAL).
BACKSTOP_PAGES = 10_000
# How long the checkpointer's connection waits for a lock it needs (ms). A passive checkpoint
# gives up at once on a busy lock anyway; this only covers opening the file.
BUSY_TIMEOUT_MS = 1000
# The WAL-index header and checkpoint info at the start of the ``-shm`` file: up to
# ``nBackfill`` (offset 96) inclusive.
_HEADER_BYTES = 100
_U32 = struct.Struct("=I")


class WalCheckpointer:
    """A daemon thread checkpointing the WAL of the SQLite file at ``path`` (see the module
    docstring). ``start`` once; ``stop`` once, at shutdown (waits for a checkpoint running)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0  # how many ran (tests, diagnostics)
        self.checkpointed = threading.Event()  # set after each one
        self._shm: int | None = None  # the -shm file, opened on the first look at it

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
            pending_since: float | None = None  # when a look first found commits not yet checkpointed
            wait = ACTIVE_INTERVAL
            while not self._stopping.wait(wait):
                version = connection.execute("PRAGMA data_version").fetchone()[0]
                if version != seen:  # something was committed (the first look: maybe, before we started)
                    seen, wait = version, ACTIVE_INTERVAL
                    if pending_since is None:
                        pending_since = time.monotonic()
                    if (time.monotonic() - pending_since < MAX_DELAY
                            and self._frames_pending() < CHECKPOINT_FRAMES):
                        continue
                elif pending_since is None:  # nothing since the last checkpoint
                    wait = min(wait * 2, IDLE_INTERVAL)
                    continue
                # Otherwise commits stopped: copy back what they wrote now.
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                pending_since = None
                self.checkpoints += 1
                self.checkpointed.set()
        except sqlite3.Error:
            # A broken file or a closed database: the request path's automatic checkpoint
            # (BACKSTOP_PAGES) still bounds the WAL.
            log.warning("WAL checkpoints stopped; SQLite checkpoints inside commits", exc_info=True)
        finally:
            connection.close()
            if self._shm is not None:
                os.close(self._shm)
                self._shm = None

    def _frames_pending(self) -> int:
        """Frames in the WAL not yet copied back, from the WAL-index header in the ``-shm``
        file (``mxFrame`` at offset 16, ``nBackfill`` at 96, native byte order; see the module
        docstring); 0 when it cannot be read, leaving ``MAX_DELAY`` to decide."""
        try:
            if self._shm is None:
                self._shm = os.open(self.path + "-shm", os.O_RDONLY)
            header = os.pread(self._shm, _HEADER_BYTES, 0)
        except OSError:
            return 0
        if len(header) < _HEADER_BYTES:
            return 0
        frames: int = _U32.unpack_from(header, 16)[0]
        copied: int = _U32.unpack_from(header, 96)[0]
        return max(frames - copied, 0)
