"""API key scopes: ``api_keys.permissions``, the permissions a key was created with (a JSON
list as text, like ``roles.permissions``). NULL, which every existing key gets, means "all of
its owner's": existing keys keep working exactly as before.
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.add_fields("api_keys", permissions=pw.TextField(null=True))


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    migrator.remove_fields("api_keys", "permissions")
