"""Schema migrations: one peewee-migrate history per owner (the core and each plugin).

Each owner keeps its migration files in its own folder and its applied list in its own table
(``migratehistory_<owner>``), so a plugin can be added, upgraded or rolled back without
touching anyone else's history. The core's folder is the top-level ``migrations/`` of a
checkout, shipped inside the package by a wheel (see ``vachat.resources``).
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import peewee
from peewee_migrate import Router

from .resources import core_resource

__all__ = ["MigrationSource", "Migrations", "CORE_MIGRATIONS"]

log = logging.getLogger("vachat.migrate")

CORE_MIGRATIONS = core_resource("migrations")
# Key of the PostgreSQL advisory lock held while migrating (any constant; "vachat" in ASCII).
MIGRATION_LOCK_ID = 0x766163686174


@dataclass(frozen=True)
class MigrationSource:
    owner: str
    directory: Path

    @property
    def table(self) -> str:
        return "migratehistory_" + re.sub(r"[^a-z0-9_]", "_", self.owner.lower())


class Migrations:
    """Apply, roll back, list and create migrations for a set of owners, core first."""

    def __init__(self, engine: peewee.Database, sources: list[MigrationSource]) -> None:
        self.engine = engine
        self.sources = {source.owner: source for source in sources}

    def _router(self, owner: str) -> Router:
        source = self.sources.get(owner)
        if source is None:
            raise KeyError(f"no migrations for {owner!r}; known: {', '.join(self.sources) or 'none'}")
        source.directory.mkdir(parents=True, exist_ok=True)
        return Router(self.engine, migrate_dir=str(source.directory), migrate_table=source.table,
                      logger=logging.getLogger(f"vachat.migrate.{owner}"))

    def pending(self) -> dict[str, list[str]]:
        """Owner → names not applied yet (owners with nothing pending are left out).

        Under the migration lock too: reading a history creates its table when missing, and
        two nodes starting together on a fresh PostgreSQL database would race to create it.
        """
        result = {}
        with self._exclusive():
            for owner in self.sources:
                diff = self._router(owner).diff
                if diff:
                    result[owner] = list(diff)
        return result

    def status(self) -> dict[str, dict[str, list[str]]]:
        return {
            owner: {"applied": list(router.done), "pending": list(router.diff)}
            for owner, router in ((owner, self._router(owner)) for owner in self.sources)
        }

    def apply(self, owner: str | None = None) -> dict[str, list[str]]:
        """Apply what is pending (for one owner, or all: the core first). Returns what ran.

        On PostgreSQL an advisory lock serialises nodes that start together on one database:
        the second waits, then finds nothing left to do.
        """
        applied = {}
        with self._exclusive():
            for name in ([owner] if owner else list(self.sources)):
                router = self._router(name)
                todo = list(router.diff)
                if todo:
                    log.info("applying migrations", extra={"owner": name, "migrations": todo})
                    router.run()
                    applied[name] = todo
        return applied

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        if not isinstance(self.engine, peewee.PostgresqlDatabase):
            yield  # SQLite is one node's file; its own write lock orders the rest
            return
        self.engine.execute_sql("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            yield
        finally:
            self.engine.execute_sql("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))

    def rollback(self, owner: str, steps: int = 1) -> list[str]:
        """Roll back the last ``steps`` migrations of one owner; returns their names."""
        router = self._router(owner)
        rolled = []
        for _ in range(steps):
            if not router.done:
                break
            name = router.done[-1]
            router.rollback()
            rolled.append(name)
        return rolled

    def create(self, owner: str, name: str) -> str:
        """Write an empty migration file for ``owner`` and return its path."""
        router = self._router(owner)
        created = router.create(name, auto=False)
        return str(self.sources[owner].directory / f"{created}.py")
