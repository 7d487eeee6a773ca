"""Look-alike identities: the confusable skeletons of each account's e-mail address and
username (``vachat.accounts.identity``), each in a uniquely indexed column of ``users``.

Existing accounts get theirs computed here, oldest first. Should two existing accounts already
share a skeleton, the newer one's stays NULL (a unique index allows any number of NULLs): it
keeps working, and the older one still holds the skeleton against new registrations. The
backfill uses the current ``identity`` code on purpose: the skeleton must be the same function
the application compares with.
"""

import peewee as pw
from peewee_migrate import Migrator

SKELETON_MAX_LENGTH = 1024


def _backfill(database: pw.Database) -> None:
    from vachat.accounts.identity import email_skeleton, username_skeleton

    users = pw.Table("users", ("id", "email", "username", "created_at", "email_skeleton", "username_skeleton"))
    rows = list(users.select(users.id, users.email, users.username)
                .order_by(users.created_at, users.id).bind(database).dicts())
    taken: dict[str, set[str]] = {"email_skeleton": set(), "username_skeleton": set()}
    for row in rows:
        keys = {"email_skeleton": email_skeleton(row["email"]),
                "username_skeleton": username_skeleton(row["username"]) if row["username"] else None}
        changes = {}
        for column, key in keys.items():
            if key is not None and key not in taken[column]:
                taken[column].add(key)
                changes[getattr(users, column)] = key
        if changes:
            users.update(changes).where(users.id == row["id"]).bind(database).execute()


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Add the skeleton columns, uniquely indexed, and fill them (the backfill never writes a
    duplicate, so the index can exist before it)."""
    migrator.add_fields(
        "users",
        email_skeleton=pw.CharField(max_length=SKELETON_MAX_LENGTH, null=True, unique=True),
        username_skeleton=pw.CharField(max_length=SKELETON_MAX_LENGTH, null=True, unique=True),
    )
    migrator.run(_backfill, database)


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop the skeleton columns and their indexes."""
    migrator.drop_index("users", "email_skeleton")
    migrator.drop_index("users", "username_skeleton")
    migrator.remove_fields("users", "email_skeleton", "username_skeleton")
