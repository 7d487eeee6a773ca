"""The chat part of the admin dashboard, through the real server: conversations and live
messages per UTC day of creation, kept as counters in step with every write (sends, assistant
replies, retries, message and conversation deletes, account deletion), equal at every step to
a recount of the tables; tombstones do not count."""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

import pytest

import plugins.chat.service as chat_service
import plugins.chat.store as chat_store
from plugins.chat import counters
from plugins.chat.models import Conversation, Message
from vachat.plugin_api import now

from .helpers import ALICE, BOB, create_conversation, send

WITH_ADMIN = pytest.mark.vachat(plugins=["chat", "admin"])
DASHBOARD = {"X-Test-Permissions": "admin.dashboard"}


async def dashboard(fetch: Any) -> dict[str, Any]:
    response = await fetch("/api/admin/dashboard", user="operator", headers=DASHBOARD)
    assert response.code == 200, response.body
    return response.data


def recount() -> dict[str, Any]:
    """The same figures counted from the tables themselves (what the counters must equal)."""
    live = Message.select().where(Message.deleted_at.is_null())
    days: dict[str, int] = {}
    for message in live:
        day = message.created_at.date().isoformat()
        days[day] = days.get(day, 0) + 1
    return {"conversations": Conversation.select().count(), "messages": live.count(), "days": days}


async def assert_matches_recount(app: Any, fetch: Any) -> dict[str, Any]:
    figures = await dashboard(fetch)
    truth = await app.db.run(recount)
    assert figures["conversations"] == {"total": truth["conversations"]}
    assert figures["messages"]["total"] == truth["messages"]
    series = figures["messages"]["perDay"]
    assert [entry["count"] for entry in series] == [truth["days"].get(entry["date"], 0) for entry in series]
    assert "conversations" not in figures["missing"] and "messages" not in figures["missing"]
    return figures


class Clock:
    """Moves the chat service's clock back by whole days (messages "sent" on earlier days):
    the service's and its store's, which both stamp writes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.real = now  # what the service calls, until days_ago replaces it there

    def days_ago(self, days: int) -> None:
        for module in (chat_service, chat_store):
            self.monkeypatch.setattr(module, "now", lambda: self.real() - datetime.timedelta(days=days))

    def reset(self) -> None:
        for module in (chat_service, chat_store):
            self.monkeypatch.setattr(module, "now", self.real)


@WITH_ADMIN
@pytest.mark.gen_test
async def test_empty_chat_shows_zeros_for_the_last_seven_days(fetch):
    figures = await dashboard(fetch)
    today = datetime.datetime.now(datetime.timezone.utc).date()
    assert figures["conversations"] == {"total": 0}
    assert figures["messages"] == {"total": 0, "perDay": [
        {"date": (today - datetime.timedelta(days=back)).isoformat(), "count": 0} for back in range(6, -1, -1)]}


@WITH_ADMIN
@pytest.mark.gen_test
async def test_counters_follow_every_write_and_match_a_recount(app, fetch, monkeypatch):
    clock = Clock(monkeypatch)
    first = await create_conversation(fetch)
    clock.days_ago(3)
    old = [(await send(fetch, first["id"], f"old {n}"))["data"] for n in range(3)]
    clock.days_ago(9)  # older than the series: in the total only
    await send(fetch, first["id"], "ancient")
    clock.reset()
    retried = (await send(fetch, first["id"], "now", clientMessageId="once"))["data"]
    again = await fetch("/api/chat/message", method="POST", user=ALICE,
                        json={"conversationId": first["id"], "content": "now", "clientMessageId": "once"})
    assert again.code in (200, 201) and again.data["id"] == retried["id"]  # a retry stores nothing new
    await app.service("chat").store_assistant_message(first["id"], "a reply")
    second = await create_conversation(fetch, user=BOB)
    for n in range(4):
        await send(fetch, second["id"], f"bob {n}", user=BOB)

    figures = await assert_matches_recount(app, fetch)
    assert figures["conversations"] == {"total": 2}
    assert figures["messages"]["total"] == 10
    assert [entry["count"] for entry in figures["messages"]["perDay"]] == [0, 0, 0, 3, 0, 0, 6]

    # A deleted message leaves its own day's count (a tombstone does not count), once only.
    assert (await fetch(f"/api/chat/messages/{old[0]['id']}", method="DELETE", user=ALICE)).code in (200, 204)
    assert (await fetch(f"/api/chat/messages/{old[0]['id']}", method="DELETE", user=ALICE)).code == 404
    figures = await assert_matches_recount(app, fetch)
    assert figures["messages"]["total"] == 9
    assert figures["messages"]["perDay"][3]["count"] == 2

    # Deleting a conversation takes it and its live messages (not its tombstones again) away.
    assert (await fetch(f"/api/chat/conversations/{first['id']}", method="DELETE", user=ALICE)).code in (200, 204)
    figures = await assert_matches_recount(app, fetch)
    assert figures["conversations"] == {"total": 1}
    assert figures["messages"]["total"] == 4
    assert [entry["count"] for entry in figures["messages"]["perDay"]] == [0, 0, 0, 0, 0, 0, 4]


@WITH_ADMIN
@pytest.mark.gen_test
async def test_account_deletion_takes_the_users_conversations_and_messages_off(app, fetch, make_user, admin_user):
    carol = await make_user()
    mine = await create_conversation(fetch, user=carol, isPublic=True)
    await send(fetch, mine["id"], "carol's own", user=carol)
    theirs = await create_conversation(fetch, user=ALICE)
    await send(fetch, theirs["id"], "alice's", user=ALICE)
    before = await assert_matches_recount(app, fetch)
    assert before["conversations"] == {"total": 2} and before["messages"]["total"] == 2

    response = await fetch(f"/api/admin/users/{carol.id}", method="DELETE", user=admin_user)
    assert response.code in (200, 204), response.body
    after = await assert_matches_recount(app, fetch)
    assert after["conversations"] == {"total": 1} and after["messages"]["total"] == 1


@WITH_ADMIN
@pytest.mark.gen_test
async def test_the_figures_never_read_the_message_table(app, fetch):
    """The counters answer alone: the figures' queries name only ``chat_daily_count``."""
    conversation = await create_conversation(fetch)
    await send(fetch, conversation["id"], "counted")
    seen: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if isinstance(record.msg, tuple):
                seen.append(record.msg[0])

    logger = logging.getLogger("peewee")
    handler, level = Capture(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        figures = await app.service("chat").dashboard_figures()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert figures["messages"]["total"] == 1
    assert seen and all("chat_daily_count" in sql and "chat_message" not in sql for sql in seen), seen


@WITH_ADMIN
@pytest.mark.gen_test
async def test_the_migration_counts_the_messages_already_there(app, fetch, monkeypatch):
    """An instance upgrading with messages stored: 002_daily_counts counts them once, by the
    same rule (tombstones left out), so the figures are right from the first view."""
    clock = Clock(monkeypatch)
    conversation = await create_conversation(fetch)
    clock.days_ago(2)
    gone = (await send(fetch, conversation["id"], "deleted before the upgrade"))["data"]
    await send(fetch, conversation["id"], "two days old")
    clock.reset()
    await send(fetch, conversation["id"], "today")
    await fetch(f"/api/chat/messages/{gone['id']}", method="DELETE", user=ALICE)
    before = await assert_matches_recount(app, fetch)

    migrations = app.migrations()
    # Back to before 002 (undoing the later ones first), then forward again.
    assert await app.db.run(migrations.rollback, "chat", 5) == [
        "006_search_pending", "005_list_versions", "004_change_seq", "003_partial_client_message_index", "002_daily_counts"]
    try:
        assert "chat_daily_count" not in await app.db.run(app.db.engine.get_tables)
    finally:
        await app.db.run(migrations.apply, "chat")
    after = await assert_matches_recount(app, fetch)
    assert after["messages"] == before["messages"] and after["conversations"] == {"total": 1}
    assert after["messages"]["total"] == 2


@WITH_ADMIN
@pytest.mark.gen_test(timeout=120)
async def test_one_owners_concurrent_sends_replies_and_deletes_never_deadlock(app, fetch):
    # On PostgreSQL a write to a conversation or message locks its owner's list version and a
    # counter write locks the counter row: taken in opposite orders by two transactions of the
    # same owner whose conversations share a counter slot, PostgreSQL aborts one of them (a
    # 500 for its caller). Every write takes counters last (counters' lock order); here all the
    # conversations share one slot, and sends (batched), assistant replies (one by one),
    # message deletes and conversation deletes run at once, several rounds.
    chat = app.service("chat")
    for _ in range(3):
        by_slot: dict[int, list[str]] = {}
        while max((len(ids) for ids in by_slot.values()), default=0) < 8:
            conversation = await create_conversation(fetch)
            by_slot.setdefault(counters.slot_of(conversation["id"]), []).append(conversation["id"])
        ids = max(by_slot.values(), key=len)[:8]
        others = [cid for slot_ids in by_slot.values() for cid in slot_ids if cid not in ids]
        for cid in others:  # not part of this round
            assert (await fetch(f"/api/chat/conversations/{cid}", method="DELETE", user=ALICE)).code == 200
        senders, victims = ids[:4], ids[4:]
        doomed = [(await send(fetch, cid, "to delete"))["data"]["id"] for cid in senders]
        for cid in victims:
            await send(fetch, cid, "goes with its conversation")

        async def check(call: Any, *expected: int) -> None:
            response = await call
            assert response.code in expected, response.body

        await asyncio.gather(
            *(check(fetch("/api/chat/message", method="POST", user=ALICE,
                          json={"conversationId": cid, "content": f"message {n}"}), 201)
              for cid in senders for n in range(4)),
            *(chat.store_assistant_message(cid, "a reply") for cid in senders),
            *(check(fetch(f"/api/chat/messages/{mid}", method="DELETE", user=ALICE), 200) for mid in doomed),
            *(check(fetch(f"/api/chat/conversations/{cid}", method="DELETE", user=ALICE), 200) for cid in victims))
    await assert_matches_recount(app, fetch)
