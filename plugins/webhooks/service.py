"""What the webhooks plugin does with webhooks and their deliveries (published as the service
``"webhooks"``): a user's webhooks, and turning an event of theirs into queued deliveries.

An event becomes one ``webhooks_delivery`` row per active webhook of the event's owner that
subscribes to its type, written on a database thread in a background task: the request or
message that caused the event never waits for it. Rows survive a restart; the dispatcher
(``dispatcher.py``) sends them. Which owners have webhooks is remembered per node, so the
common case (a user with none) costs no query; a change is told to the other nodes at once (a
control message) and the memory also expires, in case such a message was lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import peewee

from vachat.plugin_api import App, NotFound, ServiceKey, ValidationFailed, database, json_dumps, new_id, now

from .models import DELIVERED, FAILED, PENDING, TEST_EVENT, Delivery, Webhook
from .settings import settings_of
from .signing import new_secret
from .targets import TargetRefused, check_addresses

__all__ = ["WebhooksService", "SERVICE", "EVENT_TYPES", "TEST_EVENT", "CONTROL_CHANGED"]

log = logging.getLogger("vachat.plugins.webhooks")

EVENT_TYPES = ("conversation.created", "conversation.updated", "conversation.deleted", "message.created",
               "message.updated", "message.deleted", "ai.reply.completed", "file.uploaded")
#: Control message telling the other nodes that an owner's webhooks changed.
CONTROL_CHANGED = "webhooks-changed"
# How long a node trusts what it remembers of an owner's webhooks when no change message came
# (Redis down): a new webhook starts hearing events at the latest this many seconds later.
SUBSCRIPTIONS_TTL_SECS = 30.0
# Ids are 26 characters; anything much longer is not one, and need not reach the database.
_MAX_ID_CHARS = 64


def _subscriptions_of(owner_id: str) -> list[tuple[str, frozenset[str]]]:
    rows = Webhook.select(Webhook.id, Webhook.events).where((Webhook.owner_id == owner_id) & Webhook.is_active)
    return [(row.id, frozenset(row.events or ())) for row in rows]


def _owned(owner_id: str, webhook_id: str) -> Webhook:
    webhook: Webhook | None = Webhook.get_or_none((Webhook.id == webhook_id) & (Webhook.owner_id == owner_id)) \
        if len(webhook_id) <= _MAX_ID_CHARS else None
    if webhook is None:
        raise NotFound("Webhook not found")
    return webhook


def _queue(webhook_ids: list[str], event_type: str, payload: str) -> list[str]:
    moment = now()
    rows: list[dict[str, Any]] = [{"id": new_id(), "webhook": webhook_id, "event_type": event_type, "payload": payload,
             "status": PENDING, "next_attempt_at": moment, "created_at": moment} for webhook_id in webhook_ids]
    with database.atomic():
        Delivery.insert_many(rows).execute()
    return [str(row["id"]) for row in rows]


class WebhooksService:
    def __init__(self, app: App) -> None:
        self.app = app
        self._subscriptions: dict[str, tuple[float, list[tuple[str, frozenset[str]]]]] = {}
        self._queueing: set[asyncio.Task[Any]] = set()
        #: Called with no argument when deliveries were queued on this node (the dispatcher's wake-up).
        self.on_queued: Any = None

    # -- a user's webhooks -------------------------------------------------------------

    async def _check_target(self, url: str) -> str:
        url = url.strip()
        try:
            await self.app.run_blocking(check_addresses, url, settings_of(self.app).allow_private)
        except TargetRefused as refused:
            raise ValidationFailed("This URL cannot receive webhooks", details=[{"field": "url", "message": str(refused)}])
        return url

    async def create(self, owner_id: str, url: str, events: list[str], description: str) -> dict[str, Any]:
        url = await self._check_target(url)
        limit = settings_of(self.app).max_per_user

        def create() -> Webhook:
            with database.atomic():
                if Webhook.select().where(Webhook.owner_id == owner_id).count() >= limit:
                    raise ValidationFailed(f"You may have at most {limit} webhooks", details=[
                        {"field": "url", "message": f"no more than {limit} webhooks per user"}])
                created: Webhook = Webhook.create(owner_id=owner_id, url=url, events=list(events),
                                                  description=description, secret=new_secret())
                return created

        webhook = await self.app.db.run(create)
        await self._changed(owner_id)
        return {**webhook.to_wire(), "secret": webhook.secret}

    async def of_owner(self, owner_id: str) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            query = Webhook.select().where(Webhook.owner_id == owner_id).order_by(Webhook.created_at, Webhook.id)
            return [webhook.to_wire() for webhook in query]

        return await self.app.db.run(read)

    async def get(self, owner_id: str, webhook_id: str) -> dict[str, Any]:
        return (await self.app.db.run(_owned, owner_id, webhook_id)).to_wire()

    async def update(self, owner_id: str, webhook_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        if "url" in changes:
            changes = {**changes, "url": await self._check_target(changes["url"])}
        columns = {"url": "url", "events": "events", "description": "description", "isActive": "is_active"}

        def update() -> dict[str, Any]:
            with database.atomic():
                webhook = _owned(owner_id, webhook_id)
                for name, column in columns.items():
                    if name in changes:
                        setattr(webhook, column, changes[name])
                if changes.get("isActive"):
                    webhook.failing_since, webhook.disabled_reason = None, None
                webhook.updated_at = now()
                webhook.save()
            wire: dict[str, Any] = webhook.to_wire()
            return wire

        updated = await self.app.db.run(update)
        await self._changed(owner_id)
        return updated

    async def delete(self, owner_id: str, webhook_id: str) -> None:
        def delete() -> None:
            with database.atomic():
                _owned(owner_id, webhook_id).delete_instance()  # its deliveries cascade

        await self.app.db.run(delete)
        await self._changed(owner_id)

    async def deliveries(self, owner_id: str, webhook_id: str, *, page: int, limit: int,
                         status: str | None) -> tuple[list[dict[str, Any]], int]:
        def read() -> tuple[list[dict[str, Any]], int]:
            webhook = _owned(owner_id, webhook_id)
            query = Delivery.select().where(Delivery.webhook == webhook.id)
            if status is not None:
                query = query.where(Delivery.status == status)
            rows = query.order_by(Delivery.created_at.desc(), Delivery.id.desc()).paginate(page, limit)
            return [row.to_wire() for row in rows], query.count()

        return await self.app.db.run(read)

    async def send_test(self, owner_id: str, webhook_id: str) -> dict[str, Any]:
        """Queue a ``webhook.test`` event for this webhook alone (active or not)."""
        webhook = await self.app.db.run(_owned, owner_id, webhook_id)
        payload = self._payload(TEST_EVENT, {"webhookId": webhook.id, "message": "A test delivery from vachat"})
        [delivery_id] = await self.app.db.run(_queue, [webhook.id], TEST_EVENT, payload)
        self._wake()
        delivery: Delivery = await self.app.db.run(Delivery.get_by_id, delivery_id)
        wire: dict[str, Any] = delivery.to_wire()
        return wire

    # -- events --------------------------------------------------------------------------

    def emit(self, owner_id: str | None, event_type: str, data: Any) -> None:
        """Queue ``event_type`` for ``owner_id``'s webhooks that subscribe to it, in the
        background (the caller does not wait)."""
        if owner_id is None:
            return
        remembered = self._remembered(owner_id)
        if remembered is not None and not any(event_type in events for _, events in remembered):
            return  # the common case, known without a task: no webhook of this owner hears it
        task = asyncio.ensure_future(self._emit(owner_id, event_type, data))
        self._queueing.add(task)
        task.add_done_callback(self._queueing.discard)

    async def _emit(self, owner_id: str, event_type: str, data: Any) -> None:
        try:
            subscriptions = await self._subscriptions_for(owner_id)
            webhook_ids = [webhook_id for webhook_id, events in subscriptions if event_type in events]
            if not webhook_ids:
                return
            await self.app.db.run(_queue, webhook_ids, event_type, self._payload(event_type, data))
            self._wake()
        except Exception:
            log.exception("webhooks | could not queue an event", extra={"eventType": event_type, "ownerId": owner_id})

    @staticmethod
    def _payload(event_type: str, data: Any) -> str:
        return json_dumps({"type": event_type, "timestamp": now().isoformat(timespec="milliseconds") + "Z", "data": data})

    async def _subscriptions_for(self, owner_id: str) -> list[tuple[str, frozenset[str]]]:
        remembered = self._remembered(owner_id)
        if remembered is not None:
            return remembered
        subscriptions = await self.app.db.run(_subscriptions_of, owner_id)
        self._subscriptions[owner_id] = (time.monotonic() + SUBSCRIPTIONS_TTL_SECS, subscriptions)
        return subscriptions

    def _remembered(self, owner_id: str) -> list[tuple[str, frozenset[str]]] | None:
        """What this node remembers of an owner's webhooks, while it is fresh; None otherwise."""
        remembered = self._subscriptions.get(owner_id)
        return remembered[1] if remembered is not None and remembered[0] > time.monotonic() else None

    def forget(self, owner_id: str) -> None:
        """Drop what this node remembers of an owner's webhooks (they changed)."""
        self._subscriptions.pop(owner_id, None)

    async def _changed(self, owner_id: str) -> None:
        self.forget(owner_id)
        await self.app.hub.send_control(CONTROL_CHANGED, {"ownerId": owner_id})

    def _wake(self) -> None:
        if self.on_queued is not None:
            self.on_queued()

    async def drain(self) -> None:
        """Wait for events still being queued (shutdown)."""
        if self._queueing:
            await asyncio.gather(*self._queueing, return_exceptions=True)

    # -- accounts, export and the dashboard -------------------------------------------------

    async def delete_all_of(self, owner_id: str) -> None:
        def delete() -> None:
            with database.atomic():
                ids = [row.id for row in Webhook.select(Webhook.id).where(Webhook.owner_id == owner_id)]
                if ids:
                    Delivery.delete().where(Delivery.webhook.in_(ids)).execute()
                    Webhook.delete().where(Webhook.id.in_(ids)).execute()

        await self.app.db.run(delete)
        await self._changed(owner_id)

    async def totals(self) -> dict[str, int]:
        def read() -> dict[str, int]:
            counts = dict(Delivery.select(Delivery.status, peewee.fn.COUNT(Delivery.id))
                          .where(Delivery.status.in_([DELIVERED, FAILED])).group_by(Delivery.status).tuples())
            return {"delivered": counts.get(DELIVERED, 0), "failed": counts.get(FAILED, 0)}

        return await self.app.db.run(read)


#: ``app.service(SERVICE)``: this plugin's service, typed.
SERVICE: ServiceKey[WebhooksService] = ServiceKey("webhooks")
