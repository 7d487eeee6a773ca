"""A send batch's writes in as few round trips as the database needs (``Writes``).

On SQLite a statement executed once per row (``executemany``) costs no round trip, and SQLite
keeps the statement prepared between rows: that is how the writes go. On PostgreSQL every
execution is a round trip to the server (psycopg2's ``executemany`` is a loop of them), and a
send batch of 64 messages made about 200 of them (each message's INSERT and search entry, each
conversation's UPDATE, each counter's upsert). There, each write becomes one statement of many
rows (``VALUES (…), (…)``, the values quoted by psycopg2 exactly as ``execute`` quotes them), and
the statements of a batch are sent together in one ``execute`` when ``send`` is called: one
round trip for all of the batch's writes, inside its transaction.

Runs on a database thread, inside the caller's transaction.
"""

from __future__ import annotations

from typing import Any, Sequence

import peewee

from vachat.plugin_api import database

__all__ = ["Writes"]

# Turns the driver's exceptions into Peewee's (IntegrityError, …), as ``execute_sql`` does:
# the callers catch Peewee's. (Read by name: inside a class body the dunder name is mangled.)
_PEEWEE_ERRORS = getattr(peewee, "__exception_wrapper__")


class Writes:
    """The writes of one batch: ``add`` each statement, then ``send`` them (PostgreSQL: all in
    one round trip; SQLite: each ran as it was added)."""

    def __init__(self) -> None:
        self.db = database.obj
        self.is_postgres = isinstance(self.db, peewee.PostgresqlDatabase)
        self._statements: list[bytes] = []

    def add(self, sql: str, row: str, rows: Sequence[Sequence[Any]]) -> None:
        """``sql`` with ``{values}`` where the rows go, for every row of ``rows``; ``row`` is one
        row's placeholders with ``%s`` (``"(%s, %s)"``). PostgreSQL: all the rows in one
        statement, sent by ``send``; SQLite: executed now, one row at a time."""
        if not rows:
            return
        if not self.is_postgres:
            with _PEEWEE_ERRORS:  # errors as Peewee's (IntegrityError), as execute_sql gives them
                self.db.cursor().executemany(sql.format(values=row.replace("%s", self.db.param)), rows)
            return
        cursor = self.db.cursor()
        values = b", ".join(cursor.mogrify(row, values) for values in rows)
        self._statements.append(sql.encode().replace(b"{values}", values))

    def send(self) -> None:
        """Run what PostgreSQL was given, in one round trip (with whatever the database holds to
        send in front of it: the transaction's BEGIN or a savepoint, see ``vachat.db``)."""
        if not self._statements:
            return
        statements, self._statements = self._statements, []
        # Already quoted; the driver still formats the text (no parameters: "%%" becomes "%").
        self.db.execute_sql(b"; ".join(statements).replace(b"%", b"%%").decode())
