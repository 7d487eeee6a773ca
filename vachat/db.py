"""The database: one Peewee proxy bound at start-up, one ``BaseModel``, and the threads that
keep every query off the IOLoop.

Models everywhere (core and plugins) extend ``BaseModel``; the concrete database (SQLite by
default, PostgreSQL through ``DATABASE_URL``) is chosen once by ``Database.open``. Handlers never
call Peewee on the IOLoop thread: they hand a plain function to ``await app.db.run(fn, ...)``,
which runs it on a bounded thread pool where each thread holds its own connection.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import unquote, urlparse

import peewee
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

from .config import PRIVATE_FILE_MODE, make_private_dir, redact_url
from .errors import Unavailable
from .ids import new_id
from .threads import ThreadPool
from .wal_checkpoints import BACKSTOP_PAGES, WalCheckpointer

__all__ = ["database", "BaseModel", "JSONField", "Database", "connect_url", "now", "lock_rows"]

log = logging.getLogger("vachat.db")
T = TypeVar("T")

database = peewee.DatabaseProxy()

# SQLite: WAL lets readers proceed while one thread writes; a writer that finds the file
# locked waits this long (ms) instead of failing at once.
SQLITE_BUSY_TIMEOUT_MS = 5000
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "synchronous": "normal",  # safe with WAL: a crash loses at most the last commits, never corrupts
    "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
    # A serving process checkpoints on a thread of its own (``wal_checkpoints``); a commit
    # checkpoints only as a backstop, past this many pages of WAL.
    "wal_autocheckpoint": BACKSTOP_PAGES,
}
# PostgreSQL: recycle a pooled connection idle this long (s), so a restarted server or a
# proxy's idle cut does not leave us holding dead sockets forever.
POSTGRES_STALE_TIMEOUT = 300
# Seconds a caller waits for a free pooled connection before the request gets a 503
# (``DATABASE_POOL_TIMEOUT``).
POSTGRES_POOL_TIMEOUT = 10.0
# Fail fast when PostgreSQL is unreachable: a 503 now beats a request hanging for minutes.
POSTGRES_CONNECT_TIMEOUT = 5

# What a caller is told, with its 503, when the database cannot serve it.
SHUTTING_DOWN = "The database is shutting down"
AWAY = "The database is unavailable, try again shortly"
BUSY = "The database is busy, try again shortly"


def now() -> datetime.datetime:
    """The current UTC time as a naive datetime (how every timestamp column stores it)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def lock_rows(query: peewee.Select) -> peewee.Select:
    """``query`` holding the rows it reads until the transaction ends (``SELECT … FOR UPDATE``)
    on PostgreSQL, where concurrent transactions otherwise each read the same total and each
    act on it (a quota check). SQLite needs nothing: its write transactions already run one at
    a time (``BEGIN IMMEDIATE``)."""
    return query.for_update() if isinstance(database.obj, peewee.PostgresqlDatabase) else query


class BaseModel(peewee.Model):
    """Every model's base: an opaque time-ordered string id, bound to the one database."""

    id = peewee.CharField(primary_key=True, max_length=26, default=new_id)

    class Meta:
        database = database
        legacy_table_names = False


class JSONField(peewee.TextField):
    """A JSON document stored as text, the same on SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value: Any) -> Any:
        return None if value is None else json.loads(value)


def connect_url(url: str, pool_size: int = 8, pool_timeout: float = POSTGRES_POOL_TIMEOUT) -> peewee.Database:
    """A Peewee database for ``sqlite:///path`` or ``postgresql://user:pass@host:port/name``."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        raw_path = unquote(url[len("sqlite://"):])
        if raw_path in ("/:memory:", ":memory:", ""):
            return peewee.SqliteDatabase(":memory:", pragmas=SQLITE_PRAGMAS, lock_type="IMMEDIATE")
        # sqlite:///var/x.db is relative to the working directory; sqlite:////abs/x.db is absolute.
        path = Path(raw_path[1:]) if raw_path.startswith("/") else Path(raw_path)
        path = path.absolute()
        _create_private(path)
        # BEGIN IMMEDIATE: a transaction that reads and then writes would otherwise fail at once
        # with "database is locked" when another thread wrote in between (a deferred read lock
        # cannot be upgraded); taking the write lock up front makes it wait (busy_timeout).
        return peewee.SqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS, lock_type="IMMEDIATE")
    if parsed.scheme in ("postgresql", "postgres"):
        return PostgresDatabase(
            unquote(parsed.path.lstrip("/")) or "postgres",
            user=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            host=parsed.hostname or None,
            port=parsed.port or 5432,
            max_connections=pool_size,
            stale_timeout=POSTGRES_STALE_TIMEOUT,
            timeout=pool_timeout,
            connect_timeout=POSTGRES_CONNECT_TIMEOUT,
        )
    raise ValueError(f"unsupported database URL {redact_url(url)!r}")


class PostgresDatabase(PooledPostgresqlDatabase):
    """Peewee's pooled PostgreSQL database, with a transaction's bookkeeping sent along with
    the statements that do its work instead of in round trips of their own.

    Every statement is a round trip to the server, and on a loaded machine a round trip costs
    a context switch each way, far more than the statement. A transaction's ``BEGIN``, and
    ``SAVEPOINT`` / ``RELEASE SAVEPOINT`` (Peewee's nested ``atomic``), change nothing that the
    client reads back: they are held and sent, in order, in front of the transaction's next
    statement (one ``execute`` of several statements; psycopg2 answers the last one's rows),
    and a held ``RELEASE`` goes with the ``COMMIT``. A transaction that ran nothing sends
    nothing at all; a rollback drops what is held for what it undoes. A send batch went from
    six round trips (BEGIN, lock, SAVEPOINT, writes, RELEASE, COMMIT) to three.

    A statement run through a raw ``cursor()`` (``executemany``) first sends what is held, on
    its own. What is held belongs to the thread's connection (each database thread has its
    own) and is dropped when that connection is closed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held = threading.local()

    def _held_statements(self) -> list[str]:
        held: list[str] | None = getattr(self._held, "statements", None)
        if held is None:
            held = self._held.statements = []
        return held

    def begin(self, isolation_level: Any = None) -> None:
        if isolation_level is None:
            isolation_level = self._isolation_level
        if self.is_closed():
            self.connect()
        self._held_statements().append(
            f"BEGIN TRANSACTION ISOLATION LEVEL {self._adapter.isolation_level_str(isolation_level)}"
            if isolation_level else "BEGIN")

    def commit(self) -> None:
        held = self._held_statements()
        statements, began = held + ["COMMIT"], bool(held) and held[0].startswith("BEGIN")
        held.clear()
        if began:  # the transaction never reached the server: nothing to commit
            return
        with _PEEWEE_ERRORS:
            super().cursor().execute("; ".join(statements))

    def rollback(self) -> None:
        held = self._held_statements()
        began = bool(held) and held[0].startswith("BEGIN")
        held.clear()  # savepoints of the transaction being undone
        if not began:
            super().rollback()

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        held = self._held_statements()
        if sql.startswith(("SAVEPOINT ", "RELEASE SAVEPOINT ")):  # Peewee's nested atomic
            held.append(sql.rstrip(";"))
            return super().cursor()
        if sql.startswith("ROLLBACK TO SAVEPOINT "):
            opened = "SAVEPOINT " + sql[len("ROLLBACK TO SAVEPOINT "):].rstrip(";")
            if opened in held:  # never sent: forget it and what followed it
                del held[held.index(opened):]
                return super().cursor()
            held.clear()  # all of it came after the savepoint being rolled back to
            return super().execute_sql(sql, params)
        if held:
            # Held statements carry no parameters and no "%": psycopg2's formatting leaves them be.
            sql = "; ".join(held + [sql])
            held.clear()
        return super().execute_sql(sql, params)

    def cursor(self, named_cursor: Any = None) -> Any:
        held = self._held_statements()
        if held:  # a raw statement follows: what is held goes first, on its own
            statements = "; ".join(held)
            held.clear()
            with _PEEWEE_ERRORS:
                super().cursor().execute(statements)
        return super().cursor(named_cursor)

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        self._held_statements().clear()
        super()._close(conn, close_conn)


# Turns the driver's exceptions into Peewee's, as ``execute_sql`` does. (Read by name: inside a
# class body the dunder name would be mangled.)
_PEEWEE_ERRORS = getattr(peewee, "__exception_wrapper__")


def _create_private(path: Path) -> None:
    """Make the SQLite file ``PRIVATE_FILE_MODE`` (it holds password hashes) before SQLite
    opens it: SQLite creates its -wal and -shm files with the database file's mode."""
    make_private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    except FileExistsError:
        pass
    # By name, never by opening it: closing any descriptor of a SQLite file drops every POSIX
    # lock this process holds on it, under connections that may already be open.
    for existing in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        if existing.exists():
            os.chmod(existing, PRIVATE_FILE_MODE)  # one left 0644 by an older version


class Database:
    """The process's database and the bounded pool of threads that talks to it."""

    def __init__(self, url: str, pool_size: int = 8, pool_timeout: float = POSTGRES_POOL_TIMEOUT) -> None:
        self.url = url
        self.pool_timeout = pool_timeout
        self.engine = connect_url(url, pool_size, pool_timeout)
        self.is_sqlite = isinstance(self.engine, peewee.SqliteDatabase)
        self.is_postgres = isinstance(self.engine, peewee.PostgresqlDatabase)
        # One thread per pooled connection: a query never waits for a connection while
        # holding a thread, and SQLite gets a few readers beside its one writer.
        # SCHED_BATCH (``ThreadPool``): the IOLoop is not preempted when it hands a call over.
        self._threads = ThreadPool(pool_size, "vachat-db", on_exit=self._close_in_thread, batch=True)
        # thread id → the driver connection its current call runs on, so close() can interrupt it
        self._running: dict[int, Any] = {}
        self.closed = False
        self._checkpointer: WalCheckpointer | None = None

    def bind(self) -> "Database":
        """Point every model at this database."""
        database.initialize(self.engine)
        return self

    def start_checkpoints(self) -> None:
        """SQLite file: checkpoint its WAL on a thread of its own from now on, not inside the
        commits of requests (``wal_checkpoints``); stopped by ``close``. PostgreSQL: nothing."""
        if self.is_sqlite and self._checkpointer is None and not self.closed:
            path = self.engine.database
            if path and path != ":memory:":
                self._checkpointer = WalCheckpointer(path)
                self._checkpointer.start()

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on a database thread and return its result.

        The database being away, busy or shutting down becomes ``Unavailable`` (503 with
        ``Retry-After``, an ``UNAVAILABLE`` error frame on sockets) here and nowhere else: a
        lost or refused connection is dropped so the next call reconnects, which is how the
        server recovers when the database returns.
        """
        return await self.start(fn, *args, **kwargs)

    def start(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """``run`` without a coroutine: ``fn`` is handed to a database thread now, and the
        future its outcome is set on is returned (``Unavailable`` is raised here when the
        database is shutting down). For callers that settle several waiters from one call
        and need no task of their own (the send batches)."""
        if self.closed:
            raise Unavailable(SHUTTING_DOWN)
        return self._threads.start(functools.partial(self._call, fn, args, kwargs))

    def _call(self, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
        ident = threading.get_ident()
        try:
            if self.closed:  # queued before close(), started after it
                raise Unavailable(SHUTTING_DOWN)
            self.engine.connect(reuse_if_open=True)
            self._running[ident] = self.engine.connection()
            try:
                return fn(*args, **kwargs)
            finally:
                self._running.pop(ident, None)
        except MaxConnectionsExceeded as error:
            # Every connection is taken by something outside the database threads.
            log.warning("no free database connection within %s s", self.pool_timeout)
            raise Unavailable(BUSY) from error
        except (peewee.OperationalError, peewee.InterfaceError) as error:
            if self.closed:  # interrupted by close()
                raise Unavailable(SHUTTING_DOWN) from error
            if self._is_connection_error(error):
                self._drop_connection()
                log.warning("database unavailable: %s", error)
                raise Unavailable(AWAY) from error
            if self.is_sqlite and "database is locked" in str(error):  # busy past its busy_timeout
                log.warning("database busy: %s", error)
                raise Unavailable(BUSY) from error
            raise

    def _is_connection_error(self, error: Exception) -> bool:
        if self.is_sqlite:
            text = str(error).lower()
            return "unable to open" in text or "disk i/o" in text
        connection = getattr(self.engine, "_state", None)
        raw = getattr(connection, "conn", None) if connection else None
        # psycopg2 marks a connection it lost as closed; a refused connect never opened one.
        return raw is None or bool(getattr(raw, "closed", True)) or isinstance(error, peewee.InterfaceError) \
            or "server closed" in str(error) or "could not connect" in str(error) or "terminating" in str(error)

    def _drop_connection(self) -> None:
        try:
            if isinstance(self.engine, PooledPostgresqlDatabase):
                if not self.engine.is_closed():
                    self.engine.manual_close()
            else:
                self.engine.close()
        except Exception:  # the connection is already broken; we only need it gone
            log.debug("closing a broken connection failed", exc_info=True)

    async def ping(self) -> None:
        await self.run(lambda: self.engine.execute_sql("SELECT 1").fetchone())

    def close(self) -> None:
        """Close every thread's connection and stop the pool (called once, at shutdown)."""
        if self.closed:
            return
        self.closed = True
        # A query still running now belongs to a request that outlived the shutdown grace; its
        # thread (joined at interpreter exit) would hold the process for as long as it lasts.
        for raw in list(self._running.values()):
            try:
                raw.cancel() if self.is_postgres else raw.interrupt()
            except Exception:
                log.debug("interrupting a running query failed", exc_info=True)
        if self._checkpointer is not None:
            self._checkpointer.stop()
        # Each thread closes its own thread-local connection as it stops (``on_exit``).
        self._threads.shutdown(timeout=5)
        if isinstance(self.engine, PooledPostgresqlDatabase):
            self.engine.close_all()

    def _close_in_thread(self) -> None:
        if not self.engine.is_closed():
            self.engine.close()
