"""``python run.py files reconcile [--dry-run]``: make the rows and the stored objects agree.

It finds and removes
- objects in storage that no row names (an upload that crashed between commit and insert, a
  delete whose object removal failed), once they are older than ``GRACE_SECONDS`` so an
  upload being committed right now is never taken;
- temporary files of uploads abandoned by a crash (older than ``GRACE_SECONDS``), and on S3
  multipart uploads a crash left unfinished;
- rows whose object is gone (restored backups, a disk replaced), with their avatar URLs. A row
  goes only when its object is missing from the listing *and* a direct look confirms it; if the
  store cannot be asked, the command stops (exit 1) and the row stays.

``--dry-run`` reports the same findings and changes nothing. The command runs outside the
server, on a loop of its own with the database bound: it calls Peewee directly and awaits the
storage (the backend the server uses: run it with the same settings). It prints one line per
finding and a summary, and exits 0 (1 when the files table does not exist yet or the storage
failed, 2 when the storage cannot be opened).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from vachat.plugin_api import App, database

from .models import PURPOSE_AVATAR, File
from .storage import close_storage, open_storage

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
    return asyncio.run(_reconcile(app, dry_run, grace))


async def _reconcile(app: App, dry_run: bool, grace: int) -> int:
    # This loop serves this command alone: Peewee is called directly, storage is awaited.
    storage = await open_storage(app)
    try:
        return await _reconcile_with(app, storage, dry_run, grace)
    except Exception as error:  # the store failed midway: what was done is printed above
        print(f"files reconcile stopped: the storage failed ({type(error).__name__}: {error}); "
              "nothing else was changed")
        return 1
    finally:
        await close_storage(app)


async def _reconcile_with(app: App, storage: Any, dry_run: bool, grace: int) -> int:
    verb = "would remove" if dry_run else "removed"
    # Rows first, then the store: an object is committed before its row is inserted, so every
    # row read here has its object listed below unless it is really gone.
    rows = list(File.select(File.id, File.stored_name, File.owner_id, File.purpose))
    known = {row.stored_name for row in rows}

    orphans = [key async for key in storage.keys(older_than=grace) if key not in known]
    for key in orphans:
        if not dry_run:
            await storage.delete(key)
        print(f"{verb} orphan object {key}")

    stale = [name async for name in storage.stale_uploads(older_than=grace)]
    for name in stale:
        if not dry_run:
            await storage.remove_stale_upload(name)
        print(f"{verb} abandoned upload {name}")

    present = {key async for key in storage.keys()}
    # A row is dropped only when the listing lacks its object and a direct look confirms it;
    # a look that fails raises, and the row stays.
    missing = [row for row in rows if row.stored_name not in present and not await storage.exists(row.stored_name)]
    for row in missing:
        print(f"{verb} row {row.id} (its object {row.stored_name} is gone)")
    if missing and not dry_run:
        with database.atomic():
            File.delete().where(File.id.in_([row.id for row in missing])).execute()
        avatar_owners = {row.owner_id for row in missing if row.purpose == PURPOSE_AVATAR}
        try:
            for owner in avatar_owners:
                await app.accounts.set_avatar_url(owner, None)
        except Exception as error:  # the rows are gone either way; say what is left to do
            print(f"could not clear the avatar URL of {len(avatar_owners)} users: {error}")

    print(f"files reconcile{' (dry run)' if dry_run else ''}: {len(orphans)} orphan objects, "
          f"{len(stale)} abandoned uploads, {len(missing)} rows without objects")
    return 0
