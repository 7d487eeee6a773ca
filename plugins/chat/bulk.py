"""A send batch's writes in as few round trips as the database needs (``Writes``).

On SQLite a statement executed once per row (``executemany``) costs no round trip, and SQLite
keeps the statement prepared between rows: that is how the writes go. On PostgreSQL every
execution is a round trip to the server (psycopg2's ``executemany`` is a loop of them), and a
send batch of 64 messages made about 200 of them (each message's INSERT and search entry, each
conversation's UPDATE, each counter's upsert). There each write is one statement for all its
rows, and the statements of a batch are sent together in one ``execute`` when ``send`` is
called: one round trip for all of the batch's writes, inside its transaction.

The rows travel to PostgreSQL as one JSON document per statement, read back as rows of the
table's own type (``json_populate_recordset``): quoting each value in Python as a SQL literal
(psycopg2's ``mogrify``, an adapter object per value) cost about 25 µs of the server's CPU per
message; encoding the rows with orjson and quoting that one string costs a tenth of it, and the
table's column types still check every value.

Runs on a database thread, inside the caller's transaction.
"""

from __future__ import annotations

from typing import Any, Sequence

import orjson
import peewee

from vachat.plugin_api import database

__all__ = ["Writes"]

# Turns the driver's exceptions into Peewee's (IntegrityError, …), as ``execute_sql`` does:
# the callers catch Peewee's. (Read by name: inside a class body the dunder name is mangled.)
_PEEWEE_ERRORS = getattr(peewee, "__exception_wrapper__")


class Writes:
    """The writes of one batch: ``insert`` (or, PostgreSQL only, ``add``) each statement, then
    ``send`` them (PostgreSQL: all in one round trip; SQLite: each ran as it was given)."""

    def __init__(self) -> None:
        self.db = database.obj
        self.is_postgres = isinstance(self.db, peewee.PostgresqlDatabase)
        self._statements: list[bytes] = []

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], suffix: str = "") -> None:
        """INSERT ``rows`` (values in ``columns`` order) into ``table``; ``suffix`` ends the
        statement (``ON CONFLICT …``)."""
        if not rows:
            return
        names = ", ".join(columns)
        if self.is_postgres:
            self.add(f"INSERT INTO {table} ({names}) SELECT {names} FROM json_populate_recordset(NULL::{table}, %s) "
                     f"{suffix}", columns, rows)
            return
        marks = ", ".join([self.db.param] * len(columns))
        with _PEEWEE_ERRORS:  # errors as Peewee's (IntegrityError), as execute_sql gives them
            self.db.cursor().executemany(f"INSERT INTO {table} ({names}) VALUES ({marks}) {suffix}", rows)

    def add(self, sql: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """PostgreSQL: ``sql`` with one ``%s`` where the rows go, as a JSON array of objects
        keyed by ``columns`` (read with ``json_populate_recordset(NULL::table, %s)``)."""
        if rows:
            document = orjson.dumps([dict(zip(columns, row)) for row in rows]).decode()
            self._statements.append(self.db.cursor().mogrify(sql, [document]))

    def send(self) -> None:
        """Run what PostgreSQL was given, in one round trip (with whatever the database holds to
        send in front of it: the transaction's BEGIN or a savepoint, see ``vachat.db``)."""
        if not self._statements:
            return
        statements, self._statements = self._statements, []
        # Already quoted; the driver still formats the text (no parameters: "%%" becomes "%").
        self.db.execute_sql(b"; ".join(statements).replace(b"%", b"%%").decode())
