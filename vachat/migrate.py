"""Schema migrations: one peewee-migrate history per owner (the core and each plugin).

Each owner keeps its migration files in its own folder and its applied list in its own table
(``migratehistory_<owner>``), so a plugin can be added, upgraded or rolled back without
touching anyone else's history. The core's folder is the top-level ``migrations/`` of a
checkout, shipped inside the package by a wheel (see ``vachat.resources``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import re
import site
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import peewee
from peewee_migrate import Router

from .resources import core_resource

__all__ = ["MigrationSource", "Migrations", "CORE_MIGRATIONS", "installed_package_holding"]

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

    def status(self, owner: str | None = None) -> dict[str, dict[str, list[str]]]:
        """Owner → applied and pending names, for every owner or only ``owner``."""
        return {
            name: {"applied": list(router.done), "pending": list(router.diff)}
            for name, router in ((name, self._router(name)) for name in ([owner] if owner else self.sources))
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


def installed_package_holding(directory: Path) -> str | None:
    """Where ``directory`` lies inside an installed (non-editable) package, else None: under a
    site-packages folder, or inside a package whose distribution's file list (its ``RECORD``)
    names files there. A migration written there is not in anybody's source and is lost at the
    next install; an editable install's files are its checkout's and not listed, so pass."""
    directory = directory.resolve()
    roots = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    for root in sorted(roots):
        if Path(root).resolve() in directory.parents:
            return f"{directory} is inside {root}"
    package = directory.parent
    for distribution in importlib.metadata.distributions():
        for file in distribution.files or ():
            if file.parts[:1] != (package.name,):  # a cheap filter before resolving paths
                continue
            if package in Path(str(distribution.locate_file(file))).resolve().parents:
                return f"{directory} belongs to the installed distribution {distribution.metadata['Name']}"
    return None
