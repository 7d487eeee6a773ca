"""``python run.py files reconcile [--dry-run]``: make the rows and the stored objects agree.

It finds and removes
- objects in storage that no row names (an upload that crashed between commit and insert, a
  delete whose object removal failed), once they are older than ``GRACE_SECONDS`` so an
  upload being committed right now is never taken;
- temporary files of uploads abandoned by a crash (older than ``GRACE_SECONDS``);
- rows whose object is gone (restored backups, a disk replaced), with their avatar URLs.

``--dry-run`` reports the same findings and changes nothing. The command runs outside the
server's IOLoop with the database bound, so it calls Peewee and the storage directly. It prints
one line per finding and a summary, and exits 0 (1 when the files table does not exist yet).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from vachat.plugin_api import App, database

from .models import PURPOSE_AVATAR, File
from .storage import storage_of

__all__ = ["add_commands", "reconcile"]

#: Objects and temporary files younger than this are left alone: an upload's commit and its
#: row's insert happen a moment apart, and a body may take HTTP_BODY_TIMEOUT to arrive.
GRACE_SECONDS = 3600


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    files = commands.add_parser("files", help="files plugin maintenance")
    actions = files.add_subparsers(dest="files_command", metavar="action", required=True)
    reconcile_parser = actions.add_parser("reconcile", help="remove stored files without rows and rows without files")
    reconcile_parser.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    reconcile_parser.add_argument("--grace", type=int, default=GRACE_SECONDS,
                                  help=f"seconds an object must be old to count as an orphan (default {GRACE_SECONDS})")
    reconcile_parser.set_defaults(handler=reconcile)


def reconcile(app: App, args: Any) -> int:
    dry_run, grace = bool(args.dry_run), max(0, int(args.grace))
    if not database.table_exists(File._meta.table_name):
        print("files: the files table does not exist yet (run migrations first)")
        return 1
    storage = storage_of(app)
    verb = "would remove" if dry_run else "removed"

    known = {row.stored_name for row in File.select(File.stored_name)}
    orphans = [key for key in storage.keys(older_than=grace) if key not in known]
    for key in orphans:
        if not dry_run:
            storage.delete(key)
        print(f"{verb} orphan object {key}")

    stale = list(storage.stale_uploads(older_than=grace))
    for name in stale:
        if not dry_run:
            storage.remove_stale_upload(name)
        print(f"{verb} abandoned upload {name}")

    missing = [row for row in File.select(File.id, File.stored_name, File.owner_id, File.purpose)
               if not storage.exists(row.stored_name)]
    for row in missing:
        print(f"{verb} row {row.id} (its object {row.stored_name} is gone)")
    if missing and not dry_run:
        with database.atomic():
            File.delete().where(File.id.in_([row.id for row in missing])).execute()
        avatar_owners = {row.owner_id for row in missing if row.purpose == PURPOSE_AVATAR}
        if avatar_owners:
            try:
                asyncio.run(_clear_avatars(app, avatar_owners))
            except Exception as error:  # the rows are gone either way; say what is left to do
                print(f"could not clear the avatar URL of {len(avatar_owners)} users: {error}")

    print(f"files reconcile{' (dry run)' if dry_run else ''}: {len(orphans)} orphan objects, "
          f"{len(stale)} abandoned uploads, {len(missing)} rows without objects")
    return 0


async def _clear_avatars(app: App, owners: set[str]) -> None:
    for owner in owners:
        await app.accounts.set_avatar_url(owner, None)

