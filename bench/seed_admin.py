"""Seed a database with many accounts, conversations and messages, and time
``GET /api/admin/dashboard`` (and the user search) on it, in this process, through a real HTTP
server.

    .venv/bin/python bench/seed_admin.py                       # SQLite in var/bench-admin.db
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench .venv/bin/python bench/seed_admin.py
    .venv/bin/python bench/seed_admin.py --users 50000 --messages 2000000 --requests 200
    .venv/bin/python bench/seed_admin.py --no-seed             # re-measure what is there

Accounts: bulk inserts (``insert_many`` in chunks, one transaction per chunk) and one bcrypt
hash computed once for every account. Users are created over the last 60 days, a third of
them with a session used in the last two days, plus ten audit rows per user.

Chat: ``--conversations-per-user`` conversations per user and ``--messages`` messages spread
over them and over the last ``MESSAGE_DAYS`` days, one message in a hundred deleted (a
tombstone, which the figures leave out). Rows go in by the fastest bulk path of each database,
in batches of ``MESSAGE_BATCH`` (SQLite ``executemany``, PostgreSQL ``COPY``), with what the
application keeps beside them filled in as it would have: each conversation's
``message_count`` and last message, and the ``chat_daily_count`` counters the dashboard reads.
The full-text index is not filled (the dashboard never reads it).

The script loads the core, the admin and the chat plugins, prints progress on standard error
and one JSON line with the medians and 95th percentiles (ms) on standard output. ``--compare``
also times what counting messages instead of keeping counters would cost on this database.
It removes nothing (the seeded accounts are marked by their ``@bench.test`` addresses).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import csv
import datetime
import io
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bcrypt  # noqa: E402
import peewee  # noqa: E402
import tornado.httpclient  # noqa: E402

from vachat.accounts.commands import ensure_default_roles  # noqa: E402
from vachat.accounts.models import AuditLog, Session, User, UserPreferences, UserStatistics  # noqa: E402
from vachat.accounts.sessions import create_session  # noqa: E402
from vachat.app import VachatApplication  # noqa: E402
from vachat.config import load_settings  # noqa: E402
from vachat.db import now  # noqa: E402
from vachat.ids import new_id  # noqa: E402
from vachat.server import http_server  # noqa: E402
from vachat.testing import free_port  # noqa: E402
from peewee import EXCLUDED  # noqa: E402
from plugins.chat.counters import slot_of  # noqa: E402
from plugins.chat.models import DailyCount, Message  # noqa: E402

# Rows per INSERT: well under SQLite's 32,766 bound variables at ~18 columns a row.
CHUNK = 1000
AUDIT_ROWS_PER_USER = 10
SEEDED_DOMAIN = "bench.test"
# Messages are spread over this many days back from now (the dashboard shows the last seven).
MESSAGE_DAYS = 90
# Messages per bulk insert batch (and per transaction).
MESSAGE_BATCH = 20_000
# One message in this many is deleted (a tombstone: stored, not counted).
DELETED_EVERY = 100
MESSAGE_COLUMNS = ("id", "conversation_id", "user_id", "role", "type", "content", "parent_id", "metadata",
                   "client_message_id", "is_edited", "edited_at", "deleted_at", "created_at", "updated_at")
CONVERSATION_COLUMNS = ("id", "owner_id", "title", "description", "is_public", "is_archived", "metadata",
                        "current_message_id", "last_message_id", "message_count", "created_at", "updated_at")
_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def seed(users: int) -> None:
    hashed = bcrypt.hashpw(b"Bench-Password-1!", bcrypt.gensalt(rounds=4)).decode()
    moment = now()
    rng = random.Random(11)
    ensure_default_roles()
    tiers = ("free", "free", "free", "pro", "team")
    for start in range(0, users, CHUNK):
        with User._meta.database.atomic():
            rows, sessions, audits = [], [], []
            for number in range(start, min(users, start + CHUNK)):
                user_id = new_id()
                created = moment - datetime.timedelta(seconds=rng.randrange(60 * 86400))
                rows.append({"id": user_id, "email": f"user{number}@{SEEDED_DOMAIN}", "password_hash": hashed,
                             "first_name": f"First{number}", "last_name": f"Last{number % 997}", "role": "user",
                             "tier": tiers[number % len(tiers)], "is_active": number % 50 != 0,
                             "created_at": created, "updated_at": created})
                if number % 3 == 0:
                    used = moment - datetime.timedelta(seconds=rng.randrange(2 * 86400))
                    sessions.append({"id": new_id(), "user": user_id, "refresh_jti": new_id(), "ip": "10.0.0.1",
                                     "user_agent": "bench", "created_at": used, "last_used_at": used,
                                     "expires_at": used + datetime.timedelta(days=7)})
                for _ in range(AUDIT_ROWS_PER_USER):
                    audits.append({"id": new_id(), "action": "auth.login", "user_id": user_id, "actor_id": user_id,
                                   "ip": "10.0.0.1", "created_at": created})
            User.insert_many(rows).execute()
            UserPreferences.insert_many([{"id": new_id(), "user": row["id"]} for row in rows]).execute()
            UserStatistics.insert_many([{"id": new_id(), "user": row["id"]} for row in rows]).execute()
            if sessions:
                Session.insert_many(sessions).execute()
            for offset in range(0, len(audits), CHUNK):
                AuditLog.insert_many(audits[offset:offset + CHUNK]).execute()
        print(f"seeded {min(users, start + CHUNK)}/{users} users", file=sys.stderr, end="\r")
    print(file=sys.stderr)


def id_at(moment: datetime.datetime, rng: random.Random) -> str:
    """A ULID-layout id (like ``vachat.ids.new_id``) for ``moment`` (naive UTC): ids stay ordered
    by creation time, as cursor pagination expects."""
    millis = int(moment.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)
    value = (millis << 80) | rng.getrandbits(80)
    return "".join(_ID_ALPHABET[(value >> shift) & 31] for shift in range(125, -1, -5))


def bulk_insert(database, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """One batch of rows: ``COPY`` on PostgreSQL, ``executemany`` of one prepared INSERT on SQLite."""
    if isinstance(getattr(database, "obj", database), peewee.PostgresqlDatabase):  # the proxy's database
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in rows:
            writer.writerow(["\\N" if value is None else value for value in row])
        buffer.seek(0)
        with database.cursor() as cursor:
            cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buffer)
        return
    marks = ", ".join("?" for _ in columns)
    database.cursor().executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def seed_chat(messages: int, per_user: int) -> None:
    """Conversations for the seeded users and ``messages`` messages across them, with the
    conversations' message counts and the daily counters filled as the chat plugin keeps them."""
    database = User._meta.database
    rng = random.Random(12)
    moment = now()
    owners = [row[0] for row in User.select(User.id).where(User.email.endswith(f"@{SEEDED_DOMAIN}")).tuples()]
    conversations: list[dict] = []
    for owner in owners:
        for _ in range(per_user):
            created = moment - datetime.timedelta(seconds=rng.randrange(MESSAGE_DAYS * 86400))
            conversations.append({"id": id_at(created, rng), "owner_id": owner, "created_at": created,
                                  "count": 0, "last": None, "last_at": created})
    # (day, slot) -> live messages, conversations: what chat's counters hold (plugins.chat.counters)
    counters: collections.Counter = collections.Counter()
    conversation_counters: collections.Counter = collections.Counter()
    for start in range(0, len(conversations), MESSAGE_BATCH):
        with database.atomic():
            bulk_insert(database, "chat_conversation", CONVERSATION_COLUMNS, [
                (c["id"], c["owner_id"], "Seeded conversation", "", False, False, "{}", None, None, 0,
                 str(c["created_at"]), str(c["created_at"])) for c in conversations[start:start + MESSAGE_BATCH]])
    for conversation in conversations:
        conversation_counters[(conversation["created_at"].date(), slot_of(conversation["id"]))] += 1
    started = time.perf_counter()
    done = 0
    while done < messages:
        batch = []
        with database.atomic():
            for _ in range(min(MESSAGE_BATCH, messages - done)):
                conversation = conversations[rng.randrange(len(conversations))]
                span = max(1, int((moment - conversation["created_at"]).total_seconds()))
                created = conversation["created_at"] + datetime.timedelta(seconds=rng.randrange(span))
                message_id = id_at(created, rng)
                deleted = rng.randrange(DELETED_EVERY) == 0
                role = "user" if rng.random() < 0.5 else "assistant"
                batch.append((message_id, conversation["id"], conversation["owner_id"] if role == "user" else None,
                              role, "text", "" if deleted else f"seeded message {done + len(batch)}", None, "{}",
                              None, False, None, str(created) if deleted else None, str(created), str(created)))
                if not deleted:
                    conversation["count"] += 1
                    counters[(created.date(), slot_of(conversation["id"]))] += 1
                    if created >= conversation["last_at"]:
                        conversation["last"], conversation["last_at"] = message_id, created
            bulk_insert(database, "chat_message", MESSAGE_COLUMNS, batch)
        done += len(batch)
        rate = done / (time.perf_counter() - started)
        print(f"seeded {done:,}/{messages:,} messages ({rate:,.0f}/s)", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    # What the chat service keeps per conversation and per day, as if each message had gone
    # through it (one UPDATE per conversation, in batches of one transaction each).
    print("filling conversation counts and daily counters", file=sys.stderr)
    for start in range(0, len(conversations), MESSAGE_BATCH):
        with database.atomic():
            database.cursor().executemany(
                "UPDATE chat_conversation SET message_count = %s, last_message_id = %s, current_message_id = %s, "
                "updated_at = %s WHERE id = %s".replace("%s", database.param),
                [(c["count"], c["last"], c["last"], str(c["last_at"]), c["id"])
                 for c in conversations[start:start + MESSAGE_BATCH]])
    keys = sorted(counters.keys() | conversation_counters.keys())
    with database.atomic():
        (DailyCount.insert_many([{"day": day, "slot": slot, "messages": counters[(day, slot)],
                                  "conversations": conversation_counters[(day, slot)]} for day, slot in keys])
         .on_conflict(conflict_target=[DailyCount.day, DailyCount.slot],
                      update={DailyCount.messages: DailyCount.messages + EXCLUDED.messages,
                              DailyCount.conversations: DailyCount.conversations + EXCLUDED.conversations})
         .execute())
    database.execute_sql("ANALYZE")  # fresh planner statistics, as after any large load


def scan_costs(repeat: int = 5) -> dict[str, dict[str, float]]:
    """What the dashboard would pay counting messages instead of reading counters: the total
    of live messages, and the last seven days by day of creation (no index on created_at)."""
    since = (now() - datetime.timedelta(days=6)).replace(hour=0, minute=0, second=0, microsecond=0)
    queries = {
        "count_live_messages": (Message.select(peewee.fn.COUNT(Message.id)).where(Message.deleted_at.is_null())),
        "count_last_7_days": (Message.select(peewee.fn.DATE(Message.created_at), peewee.fn.COUNT(Message.id))
                              .where(Message.deleted_at.is_null(), Message.created_at >= since)
                              .group_by(peewee.fn.DATE(Message.created_at))),
    }
    results = {}
    for name, query in queries.items():
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            list(query.tuples())
            samples.append(time.perf_counter() - started)
        results[name] = {"median_ms": round(statistics.median(samples) * 1000, 1)}
    return results


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2)}


async def measure(app: VachatApplication, requests: int) -> dict[str, object]:
    from vachat.accounts.users import create_account

    admin_id = await app.db.run(lambda: create_account(f"admin-{new_id().lower()}@{SEEDED_DOMAIN}", "x", role="admin").id)
    _, tokens = await create_session(app, admin_id)
    headers = {"Authorization": f"Bearer {tokens['accessToken']}"}
    port = free_port()
    server = http_server(app)
    server.listen(port, "127.0.0.1")
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    results: dict[str, object] = {}
    try:
        for name, path in (("dashboard", "/api/admin/dashboard"),
                           ("user_search", "/api/admin/users?search=last42&limit=20"),
                           ("audit_page", "/api/admin/audit-logs?action=auth.login&limit=20")):
            samples = []
            for attempt in range(requests + 5):  # five unmeasured warm-up requests
                started = time.perf_counter()
                response = await client.fetch(f"http://127.0.0.1:{port}{path}", headers=headers)
                if attempt >= 5:
                    samples.append(time.perf_counter() - started)
            body = json.loads(response.body)
            results[name] = summary(samples)
            if name == "dashboard":
                figures = body["data"]
                results["figures"] = {"users": figures["users"], "conversations": figures.get("conversations"),
                                      "messages": figures.get("messages", {}).get("total"),
                                      "missing": figures["missing"]}
    finally:
        client.close()
        server.stop()
    return results


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--conversations-per-user", type=int, default=5)
    parser.add_argument("--requests", type=int, default=100, help="measured requests per route")
    parser.add_argument("--compare", action="store_true", help="also time counting messages instead of counters")
    parser.add_argument("--no-seed", action="store_true", help="measure the database as it is")
    args = parser.parse_args()
    default_db = f"sqlite:///{ROOT / 'var' / 'bench-admin.db'}"
    (ROOT / "var").mkdir(exist_ok=True)
    settings = load_settings(overrides={
        "database_url": os.environ.get("DATABASE_URL", default_db), "redis_url": os.environ.get("REDIS_URL", ""),
        "env": "development", "log_level": "WARNING", "log_dir": "", "rate_limit_global": "1000000/60s"})
    app = VachatApplication(settings, only_plugins=["admin", "chat"])
    app.db.bind()
    app.migrations().apply()
    if not args.no_seed:
        started = time.perf_counter()
        await app.db.run(seed, args.users)
        print(f"seeded {args.users} users in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        started = time.perf_counter()
        await app.db.run(seed_chat, args.messages, args.conversations_per_user)
        print(f"seeded {args.messages} messages in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    compared = await app.db.run(scan_costs) if args.compare else None
    await app.start()
    try:
        results = await measure(app, args.requests)
    finally:
        await app.shutdown()
    database = "postgresql" if app.db.is_postgres else "sqlite"
    print(json.dumps({"database": database, "requests": args.requests, **results,
                      **({"instead_of_counters": compared} if compared else {})}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
