"""Accounts: users, roles, sessions, password resets, e-mail verifications, API keys, the
audit log, user preferences and statistics (vachat.accounts.models).

Hand-written, and a snapshot: the models are redefined here as they were when this migration
was written, so later changes to ``vachat/accounts/models.py`` (which need their own migration)
cannot change what this one does. ``migrator.create_model`` runs each model's
``create_table``: the table, its foreign keys (inline, so the referenced table must already
exist: the order below matters on PostgreSQL) and its ``Meta.indexes``. Works on SQLite and
PostgreSQL alike: only portable column types, no dialect-specific SQL.
"""

import datetime

import peewee as pw
from peewee_migrate import Migrator


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class _Json(pw.TextField):
    """vachat.db.JSONField's storage: JSON as text."""


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Create the accounts tables."""

    @migrator.create_model
    class Role(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        name = pw.CharField(max_length=64, unique=True)
        description = pw.CharField(max_length=255, default="")
        permissions = _Json(default="[]")
        is_system = pw.BooleanField(default=False)
        created_at = pw.DateTimeField(default=_now)
        updated_at = pw.DateTimeField(default=_now)

        class Meta:
            table_name = "roles"

    @migrator.create_model
    class User(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        email = pw.CharField(max_length=254, unique=True)
        password_hash = pw.CharField(max_length=128)
        first_name = pw.CharField(max_length=100, default="")
        last_name = pw.CharField(max_length=100, default="")
        display_name = pw.CharField(max_length=100, null=True)
        username = pw.CharField(max_length=50, null=True, unique=True)
        avatar_url = pw.CharField(max_length=1024, null=True)
        bio = pw.TextField(default="")
        timezone = pw.CharField(max_length=64, default="UTC")
        language = pw.CharField(max_length=16, default="en")
        role = pw.ForeignKeyField(Role, field=Role.name, column_name="role", backref="users",
                                  on_delete="RESTRICT", on_update="CASCADE", index=False)
        tier = pw.CharField(max_length=32, default="free")
        is_active = pw.BooleanField(default=True)
        is_email_verified = pw.BooleanField(default=False)
        last_login_at = pw.DateTimeField(null=True)
        created_at = pw.DateTimeField(default=_now)
        updated_at = pw.DateTimeField(default=_now)

        class Meta:
            table_name = "users"
            indexes = ((("role",), False), (("created_at",), False))

    @migrator.create_model
    class Session(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        user = pw.ForeignKeyField(User, backref="sessions", on_delete="CASCADE", index=False)
        refresh_jti = pw.CharField(max_length=64)
        ip = pw.CharField(max_length=64, default="")
        user_agent = pw.CharField(max_length=512, default="")
        created_at = pw.DateTimeField(default=_now)
        last_used_at = pw.DateTimeField(default=_now)
        expires_at = pw.DateTimeField()
        revoked_at = pw.DateTimeField(null=True)
        revoked_reason = pw.CharField(max_length=64, null=True)

        class Meta:
            table_name = "sessions"
            indexes = ((("user", "revoked_at"), False),)

    @migrator.create_model
    class PasswordReset(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        user = pw.ForeignKeyField(User, backref="password_resets", on_delete="CASCADE", index=False)
        token_hash = pw.CharField(max_length=64, unique=True)
        ip = pw.CharField(max_length=64, default="")
        created_at = pw.DateTimeField(default=_now)
        expires_at = pw.DateTimeField()
        used_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "password_resets"
            indexes = ((("user", "used_at"), False),)

    @migrator.create_model
    class EmailVerification(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        user = pw.ForeignKeyField(User, backref="email_verifications", on_delete="CASCADE", index=False)
        email = pw.CharField(max_length=254)
        token_hash = pw.CharField(max_length=64, unique=True)
        created_at = pw.DateTimeField(default=_now)
        expires_at = pw.DateTimeField()
        used_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "email_verifications"
            indexes = ((("user", "used_at"), False),)

    @migrator.create_model
    class ApiKey(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        user = pw.ForeignKeyField(User, backref="api_keys", on_delete="CASCADE", index=False)
        name = pw.CharField(max_length=100)
        prefix = pw.CharField(max_length=16)
        key_hash = pw.CharField(max_length=64, unique=True)
        created_at = pw.DateTimeField(default=_now)
        last_used_at = pw.DateTimeField(null=True)
        expires_at = pw.DateTimeField(null=True)
        revoked_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "api_keys"
            indexes = ((("user", "revoked_at"), False),)

    @migrator.create_model
    class AuditLog(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        action = pw.CharField(max_length=64)
        user_id = pw.CharField(max_length=26, null=True)
        actor_id = pw.CharField(max_length=26, null=True)
        ip = pw.CharField(max_length=64, null=True)
        user_agent = pw.CharField(max_length=512, null=True)
        details = _Json(null=True)
        created_at = pw.DateTimeField(default=_now)

        class Meta:
            table_name = "audit_logs"
            indexes = (
                (("user_id", "created_at"), False),
                (("action", "created_at"), False),
                (("created_at",), False),
            )

    @migrator.create_model
    class UserPreferences(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        user = pw.ForeignKeyField(User, backref="preferences_rows", on_delete="CASCADE", unique=True)
        data = _Json(default="{}")
        updated_at = pw.DateTimeField(default=_now)

        class Meta:
            table_name = "user_preferences"

    @migrator.create_model
    class UserStatistics(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        user = pw.ForeignKeyField(User, backref="statistics_rows", on_delete="CASCADE", unique=True)
        conversation_count = pw.IntegerField(default=0)
        message_count = pw.IntegerField(default=0)
        file_count = pw.IntegerField(default=0)
        storage_bytes = pw.BigIntegerField(default=0)
        ai_tokens_used = pw.BigIntegerField(default=0)
        last_active_at = pw.DateTimeField(null=True)
        updated_at = pw.DateTimeField(default=_now)

        class Meta:
            table_name = "user_statistics"


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop the accounts tables, those referring to others first."""
    for table in ("user_statistics", "user_preferences", "audit_logs", "api_keys", "email_verifications",
                  "password_resets", "sessions", "users", "roles"):
        migrator.remove_model(table, cascade=True)
