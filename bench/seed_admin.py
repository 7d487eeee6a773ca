"""Seed a database with many accounts and time ``GET /api/admin/dashboard`` (and the user
search) on it, in this process, through a real HTTP server.

    .venv/bin/python bench/seed_admin.py                       # SQLite in var/bench-admin.db
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench .venv/bin/python bench/seed_admin.py
    .venv/bin/python bench/seed_admin.py --users 50000 --requests 200 --no-seed

Seeding uses bulk inserts (``insert_many`` in chunks, one transaction per chunk) and one
bcrypt hash computed once for every account. Users are created over the last 60 days, a
third of them with a session used in the last two days, plus ten audit rows per user. Messages
are not seeded here: they belong to the chat plugin, whose figures reach the dashboard through
``admin_dashboard_figures``; its own seeding and figures come with it.

The script loads only the core and the admin plugin, prints one JSON line with the medians
and 95th percentiles (ms), and removes nothing (``--no-seed`` re-measures an existing
database; the seeded rows are marked by their ``@bench.test`` addresses).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
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

# Rows per INSERT: well under SQLite's 32,766 bound variables at ~18 columns a row.
CHUNK = 1000
AUDIT_ROWS_PER_USER = 10
SEEDED_DOMAIN = "bench.test"


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
                results["figures"] = body["data"]["users"]
    finally:
        client.close()
        server.stop()
    return results


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100, help="measured requests per route")
    parser.add_argument("--no-seed", action="store_true", help="measure the database as it is")
    args = parser.parse_args()
    default_db = f"sqlite:///{ROOT / 'var' / 'bench-admin.db'}"
    (ROOT / "var").mkdir(exist_ok=True)
    settings = load_settings(overrides={
        "database_url": os.environ.get("DATABASE_URL", default_db), "redis_url": os.environ.get("REDIS_URL", ""),
        "env": "development", "log_level": "WARNING", "log_dir": "", "rate_limit_global": "1000000/60s"})
    app = VachatApplication(settings, only_plugins=["admin"])
    app.db.bind()
    app.migrations().apply()
    if not args.no_seed:
        started = time.perf_counter()
        await app.db.run(seed, args.users)
        print(f"seeded {args.users} users in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    await app.start()
    try:
        results = await measure(app, args.requests)
    finally:
        await app.shutdown()
    database = "postgresql" if app.db.is_postgres else "sqlite"
    print(json.dumps({"database": database, "requests": args.requests, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
