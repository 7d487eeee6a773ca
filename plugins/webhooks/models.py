"""The webhooks plugin's tables: a user's webhooks (``webhooks_webhook``) and the queue of
deliveries (``webhooks_delivery``), one row per event per webhook, kept after it is delivered
or has failed so its owner can see what happened.

A delivery is claimed by one node at a time: ``claimed_until`` is a lease, taken in the same
transaction that reads the row (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's writers
already take turns), so two nodes never send the same attempt, and a node that dies mid-attempt
only delays the next one until the lease runs out.
"""

from __future__ import annotations

from typing import Any

import peewee

from vachat.plugin_api import BaseModel, JSONField, now

__all__ = ["Webhook", "Delivery", "PENDING", "DELIVERED", "FAILED", "TEST_EVENT"]

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
#: Sent by ``POST /api/webhooks/:id/test`` whatever the webhook subscribes to.
TEST_EVENT = "webhook.test"


class Webhook(BaseModel):
    owner_id = peewee.CharField(max_length=64, index=True)
    url = peewee.CharField(max_length=2000)
    events = JSONField(default=list)
    description = peewee.CharField(max_length=500, default="")
    secret = peewee.CharField(max_length=100)
    is_active = peewee.BooleanField(default=True)
    # Set at the first failure since the last success; cleared by a success.
    failing_since = peewee.DateTimeField(null=True)
    disabled_reason = peewee.CharField(max_length=200, null=True)
    created_at = peewee.DateTimeField(default=now)
    updated_at = peewee.DateTimeField(default=now)

    class Meta:
        table_name = "webhooks_webhook"

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id, "url": self.url, "events": list(self.events or []), "description": self.description,
            "isActive": self.is_active, "disabledReason": self.disabled_reason,
            "createdAt": self.created_at, "updatedAt": self.updated_at,
        }


class Delivery(BaseModel):
    webhook = peewee.ForeignKeyField(Webhook, backref="deliveries", on_delete="CASCADE", index=False)
    event_type = peewee.CharField(max_length=50)
    # The exact JSON body every attempt sends: the signature covers these bytes.
    payload = peewee.TextField()
    status = peewee.CharField(max_length=16, default=PENDING)
    attempts = peewee.IntegerField(default=0)
    last_status_code = peewee.IntegerField(null=True)
    last_error = peewee.CharField(max_length=300, null=True)
    # At most RESPONSE_BODY_LIMIT bytes of the receiver's last answer, for its owner to read.
    last_response = peewee.TextField(null=True)
    last_attempt_at = peewee.DateTimeField(null=True)
    next_attempt_at = peewee.DateTimeField(null=True)
    claimed_until = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=now)

    class Meta:
        table_name = "webhooks_delivery"
        indexes = (
            (("status", "next_attempt_at"), False),  # what is due
            (("webhook", "created_at"), False),  # a webhook's deliveries, newest first
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id, "eventType": self.event_type, "status": self.status, "attempts": self.attempts,
            "lastStatusCode": self.last_status_code, "lastError": self.last_error,
            "lastAttemptAt": self.last_attempt_at,
            "nextAttemptAt": self.next_attempt_at if self.status == PENDING else None,
            "createdAt": self.created_at,
        }
