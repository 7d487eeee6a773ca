"""The webhooks plugin's tables (plugins.webhooks.models): webhooks and their deliveries.

Hand-written, a snapshot of the models as they were when this migration was written; only
portable column types, so it runs on SQLite and PostgreSQL alike. ``owner_id`` is a plain
indexed column, not a foreign key into the core's users table: the plugin removes a user's
webhooks itself (``vachat_user_deleting``).
"""

import datetime

import peewee as pw
from peewee_migrate import Migrator


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Create webhooks_webhook and webhooks_delivery."""

    @migrator.create_model
    class Webhook(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        owner_id = pw.CharField(max_length=64, index=True)
        url = pw.CharField(max_length=2000)
        events = pw.TextField(default="[]")
        description = pw.CharField(max_length=500, default="")
        secret = pw.CharField(max_length=100)
        is_active = pw.BooleanField(default=True)
        failing_since = pw.DateTimeField(null=True)
        disabled_reason = pw.CharField(max_length=200, null=True)
        created_at = pw.DateTimeField(default=_now)
        updated_at = pw.DateTimeField(default=_now)

        class Meta:
            table_name = "webhooks_webhook"

    @migrator.create_model
    class Delivery(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        webhook = pw.ForeignKeyField(Webhook, on_delete="CASCADE", index=False)
        event_type = pw.CharField(max_length=50)
        payload = pw.TextField()
        status = pw.CharField(max_length=16, default="pending")
        attempts = pw.IntegerField(default=0)
        last_status_code = pw.IntegerField(null=True)
        last_error = pw.CharField(max_length=300, null=True)
        last_response = pw.TextField(null=True)
        last_attempt_at = pw.DateTimeField(null=True)
        next_attempt_at = pw.DateTimeField(null=True)
        claimed_until = pw.DateTimeField(null=True)
        created_at = pw.DateTimeField(default=_now)

        class Meta:
            table_name = "webhooks_delivery"
            indexes = (
                (("status", "next_attempt_at"), False),
                (("webhook", "created_at"), False),
            )


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    """Drop both tables."""
    migrator.remove_model("webhooks_delivery")
    migrator.remove_model("webhooks_webhook")
