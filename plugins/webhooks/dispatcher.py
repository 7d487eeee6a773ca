"""Sending queued deliveries: one background task per node that claims what is due and sends
each attempt in a task of its own.

- **Claimed once across nodes.** A node takes up to ``CLAIM_BATCH`` due rows in one transaction
  (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so nodes never wait on each other's rows) and
  leases them (``claimed_until``) for longer than an attempt may take. A node that dies
  mid-attempt leaves a lease that simply runs out.
- **One endpoint never delays another.** Each attempt is its own task, bounded by
  ``MAX_CONCURRENT_ATTEMPTS``; a receiver that hangs holds one slot for at most the timeout.
- **Retries** follow ``WEBHOOKS_RETRY_SCHEDULE`` (Standard Webhooks: at once, then 5 s, 5 min,
  30 min, 2 h, 5 h, 10 h, 10 h) with a little jitter, on a timeout, a connection failure or any
  non-2xx answer; the ``webhook-id`` stays the same, so receivers drop duplicates. After the
  last, the delivery has failed.
- **A webhook failing** (no success) for ``WEBHOOKS_DISABLE_AFTER`` seconds is disabled, its
  pending deliveries fail, and its owner is told by e-mail.
- **Safety.** Every connection a delivery opens goes only to addresses checked as it opens
  (``targets.CheckedConnections``), redirects are not followed, and at most
  ``RESPONSE_BODY_LIMIT`` bytes of an answer are read and kept.

This module must never block the IOLoop (the database and DNS run on threads) nor let one
attempt's failure stop the loop.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
import peewee

from vachat.plugin_api import App, database, now, stop_task

from .models import DELIVERED, FAILED, PENDING, TEST_EVENT, Delivery, Webhook
from .settings import settings_of
from .signing import headers_for
from .targets import CheckedConnections, TargetRefused, allowed_addresses

__all__ = ["Dispatcher"]

log = logging.getLogger("vachat.plugins.webhooks")

# Rows taken per claim: enough to fill the attempt slots, few enough that one node does not
# hoard work another node could do.
CLAIM_BATCH = 32
# Attempts in flight on one node at once.
MAX_CONCURRENT_ATTEMPTS = 16
# How often a node looks for due rows when nothing woke it: retries that came due, and
# deliveries queued on other nodes.
POLL_INTERVAL_SECS = 1.0
# A lease outlives the longest attempt by this much (the attempt's own bookkeeping).
LEASE_MARGIN_SECS = 30.0
# Bytes of a receiver's answer read and kept (the rest is never read).
RESPONSE_BODY_LIMIT = 1024
# Each retry waits its scheduled delay times a factor in this range, so receivers that failed
# together are not retried in lockstep.
JITTER = (0.9, 1.1)
USER_AGENT = "vachat-webhooks/1"


@dataclass(frozen=True)
class _Claimed:
    delivery_id: str
    webhook_id: str
    event_type: str
    payload: str
    attempts: int
    url: str
    secret: str
    owner_id: str


def _claim(limit: int, lease_secs: float) -> list[_Claimed]:
    moment = now()
    with database.atomic():
        query = (Delivery.select(Delivery, Webhook).join(Webhook)
                 .where((Delivery.status == PENDING) & (Delivery.next_attempt_at <= moment)
                        & (Delivery.claimed_until.is_null() | (Delivery.claimed_until < moment))
                        # a webhook turned off keeps its queue for when it is turned on again;
                        # a test delivery is sent whatever the state
                        & (Webhook.is_active | (Delivery.event_type == TEST_EVENT)))
                 .order_by(Delivery.next_attempt_at).limit(limit))
        if isinstance(database.obj, peewee.PostgresqlDatabase):
            query = query.for_update(of=Delivery, skip_locked=True)
        rows = list(query)
        if rows:
            Delivery.update(claimed_until=moment + datetime.timedelta(seconds=lease_secs)).where(
                Delivery.id.in_([row.id for row in rows])).execute()
    return [_Claimed(row.id, row.webhook.id, row.event_type, row.payload, row.attempts, row.webhook.url,
                     row.webhook.secret, row.webhook.owner_id) for row in rows]


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    status_code: int | None
    error: str | None
    response: str | None


def _record(claimed: _Claimed, outcome: _Outcome, schedule: tuple[float, ...],
            disable_after: float) -> str | None:
    """Store an attempt's outcome; returns the disabled reason when this attempt disabled the
    webhook (its owner is then told)."""
    moment = now()
    attempts = claimed.attempts + 1
    fields: dict[Any, Any] = {
        Delivery.attempts: attempts, Delivery.last_status_code: outcome.status_code,
        Delivery.last_error: (outcome.error or "")[:300] or None, Delivery.last_response: outcome.response,
        Delivery.last_attempt_at: moment, Delivery.claimed_until: None,
    }
    with database.atomic():
        webhook = Webhook.get_or_none(Webhook.id == claimed.webhook_id)
        if outcome.ok:
            fields[Delivery.status] = DELIVERED
            fields[Delivery.next_attempt_at] = None
            if webhook is not None and webhook.failing_since is not None:
                Webhook.update(failing_since=None).where(Webhook.id == webhook.id).execute()
        elif attempts > len(schedule):
            fields[Delivery.status] = FAILED
            fields[Delivery.next_attempt_at] = None
        else:
            delay = schedule[attempts - 1] * random.uniform(*JITTER)
            fields[Delivery.next_attempt_at] = moment + datetime.timedelta(seconds=delay)
        Delivery.update(fields).where(Delivery.id == claimed.delivery_id).execute()
        if outcome.ok or webhook is None:
            return None
        failing_since = webhook.failing_since or moment
        if webhook.failing_since is None:
            Webhook.update(failing_since=moment).where(Webhook.id == webhook.id).execute()
        if not webhook.is_active or (moment - failing_since).total_seconds() < disable_after:
            return None
        hours = disable_after / 3600
        reason = f"Disabled after failing for {hours:g} hours" if hours >= 1 else \
            f"Disabled after failing for {disable_after:g} seconds"
        Webhook.update(is_active=False, disabled_reason=reason, updated_at=moment).where(Webhook.id == webhook.id).execute()
        Delivery.update(status=FAILED, next_attempt_at=None, last_error="The webhook was disabled").where(
            (Delivery.webhook == webhook.id) & (Delivery.status == PENDING)).execute()
        return reason


class Dispatcher:
    def __init__(self, app: App) -> None:
        self.app = app
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_ATTEMPTS)
        self._attempts: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[Any] | None = None
        self._client: httpx.AsyncClient | None = None
        self._stopping = False

    def start(self) -> None:
        settings = settings_of(self.app)
        self._client = httpx.AsyncClient(transport=self._checked_transport(), follow_redirects=False,
                                         timeout=settings.timeout, trust_env=False, headers={"User-Agent": USER_AGENT})
        self._loop_task = asyncio.ensure_future(self._run())

    def _checked_transport(self) -> httpx.AsyncHTTPTransport:
        """httpx's transport with its connection pool rebuilt on ``CheckedConnections``: httpx
        takes no network backend, and httpcore's pool is where one goes. ``_pool`` is where
        httpx 0.27 and 0.28 (the range setup.cfg allows) keep it; should that change,
        ``test_a_delivery_connects_to_the_very_address_it_checked`` fails. The limits are
        httpx's defaults."""
        transport = httpx.AsyncHTTPTransport(trust_env=False)
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False), max_connections=100,
            max_keepalive_connections=20, keepalive_expiry=5.0, network_backend=CheckedConnections(self._addresses))
        return transport

    async def _addresses(self, host: str, port: int) -> list[str]:
        """``host``'s addresses once each passes the rule (DNS on a thread)."""
        return await self.app.run_blocking(allowed_addresses, host, port, settings_of(self.app).allow_private)

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        await stop_task(self._loop_task)
        # An attempt stopped here is retried when its lease runs out, by another node or the next start.
        await asyncio.gather(*(stop_task(task) for task in list(self._attempts)))
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        lease = settings_of(self.app).timeout + LEASE_MARGIN_SECS
        while not self._stopping:
            self._wake.clear()
            try:
                free = MAX_CONCURRENT_ATTEMPTS - len(self._attempts)
                claimed = await self.app.db.run(_claim, min(free, CLAIM_BATCH), lease) if free > 0 else []
            except Exception:
                log.exception("webhooks | could not claim deliveries")
                claimed = []
            for item in claimed:
                task = asyncio.ensure_future(self._attempt(item))
                self._attempts.add(task)
                task.add_done_callback(self._attempt_done)
            if len(claimed) == CLAIM_BATCH:
                continue  # more may be due
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL_SECS)
            except asyncio.TimeoutError:
                pass

    def _attempt_done(self, task: asyncio.Task[Any]) -> None:
        self._attempts.discard(task)
        self._wake.set()  # a slot is free

    async def _attempt(self, claimed: _Claimed) -> None:
        settings = settings_of(self.app)
        async with self._slots:
            outcome = await self._send(claimed)
        try:
            disabled = await self.app.db.run(_record, claimed, outcome, settings.retry_schedule, settings.disable_after)
        except Exception:
            log.exception("webhooks | could not record an attempt", extra={"deliveryId": claimed.delivery_id})
            return
        log.info("webhooks | attempt", extra={
            "deliveryId": claimed.delivery_id, "webhookId": claimed.webhook_id, "eventType": claimed.event_type,
            "ok": outcome.ok, "statusCode": outcome.status_code, "error": outcome.error})
        if disabled is not None:
            await self._tell_owner(claimed, disabled)

    async def _send(self, claimed: _Claimed) -> _Outcome:
        body = claimed.payload.encode("utf-8")
        headers = headers_for(claimed.secret, claimed.delivery_id, int(time.time()), body)
        assert self._client is not None
        try:
            async with self._client.stream("POST", claimed.url, content=body, headers=headers) as response:
                kept = b""
                async for chunk in response.aiter_raw():
                    kept += chunk[:RESPONSE_BODY_LIMIT - len(kept)]
                    if len(kept) >= RESPONSE_BODY_LIMIT:
                        break
                text = kept.decode("utf-8", "replace")
                ok = 200 <= response.status_code < 300
                return _Outcome(ok, response.status_code, None if ok else f"The receiver answered {response.status_code}", text)
        except TargetRefused as refused:  # from CheckedConnections, as the connection opened
            return _Outcome(False, None, f"The URL {refused}", None)
        except httpx.TimeoutException:
            return _Outcome(False, None, "The receiver did not answer in time", None)
        except httpx.HTTPError as error:
            return _Outcome(False, None, f"Could not reach the receiver ({type(error).__name__})", None)

    async def _tell_owner(self, claimed: _Claimed, reason: str) -> None:
        owner = await self.app.accounts.get_user(claimed.owner_id)
        if owner is None:
            return
        self.app.mailer.send_soon(
            owner["email"], "A webhook of yours was disabled",
            f"Your webhook to {claimed.url} kept failing and was disabled ({reason}).\n\n"
            f"Its recent deliveries and the receiver's answers are listed at "
            f"GET /api/webhooks/{claimed.webhook_id}/deliveries. Fix the receiver, then turn the webhook "
            f"back on with PATCH /api/webhooks/{claimed.webhook_id} {{\"isActive\": true}}.\n")
