"""The full vachat stack for the chat benchmarks: its server's environment, a fresh database,
and the REST calls that set a run up (accounts, tokens, conversations).

The server is `run.py serve` with the core and every installed plugin (chat among them), as
in production: `VACHAT_ENV=production`, `LOG_LEVEL=WARNING` (so logging does not dominate), JWT
secrets made up for the run, `BCRYPT_ROUNDS=10` (production's minimum; only sign-ups pay it,
before measuring; a driver that measures sign-ins passes its own cost), `AUTO_MIGRATE=true` (a fresh database), no Redis. The limits that protect
users from each other are lifted through the server's environment (`LIFTED_LIMITS`): the
load comes from one IP and a few accounts, at rates no person reaches. The defaults in the
code are untouched.

Databases: SQLite is a throw-away file under /tmp; PostgreSQL is a database made for the run
on `POSTGRES_SERVER` and dropped afterwards (`BenchDatabase`).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

from bench.harness import REPO, free_port, log, start_server, stop

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"
# Per-IP, per-user and per-socket limits, far above what the benchmarks send.
LIFTED_LIMITS = {
    "RATE_LIMIT_GLOBAL": "100000000/1s",
    "RATE_LIMIT_AUTH": "100000000/1s",
    "WS_RATE_LIMIT": "100000000/1s",
    "WS_MAX_PER_IP": "1000000",
    "WS_MAX_PER_USER": "1000000",
}
PASSWORD = "Bench-pass-42!"
HTTP_TIMEOUT_S = 60
# Concurrent sign-ups while setting up (the server hashes on its thread pool, on one core).
SETUP_CONCURRENCY = 8


def server_cmd() -> list[str]:
    return [sys.executable, str(REPO / "run.py"), "serve"]


def server_env(port: int | str, database_url: str, bcrypt_rounds: int = 10) -> dict[str, str]:
    """The server's environment (`port` and `database_url` may be format fields)."""
    env = {
        "PORT": str(port), "HOST": "127.0.0.1", "VACHAT_ENV": "production", "LOG_LEVEL": "WARNING",
        "LOG_DIR": "", "DATABASE_URL": database_url, "REDIS_URL": "", "AUTO_MIGRATE": "true",
        "JWT_SECRET": secrets.token_urlsafe(48), "JWT_REFRESH_SECRET": secrets.token_urlsafe(48),
        "BCRYPT_ROUNDS": str(bcrypt_rounds), "VACHAT_PLUGIN_MODULES": "",
        "WS_PING_INTERVAL": "3600", "WS_PING_TIMEOUT": "3600",  # no pings while measuring
    }
    env.update(LIFTED_LIMITS)
    return env


class BenchDatabase:
    """A database made for one run: `url` while it lives, `count_messages()`, `drop()`."""

    def __init__(self, kind: str, tag: str) -> None:
        self.kind = kind
        if kind == "sqlite":
            self.path = Path(f"/tmp/vachat-bench-{tag}-{os.getpid()}.db")
            self.drop()
            self.url = f"sqlite:///{self.path}"
        elif kind == "postgresql":
            self.name = f"vachat_bench_{tag.replace('-', '_')}_{os.getpid()}"
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}"')
            self._admin(f'CREATE DATABASE "{self.name}"')
            self.url = f"{POSTGRES_SERVER}/{self.name}"
        else:
            raise ValueError(kind)

    def _admin(self, sql: str) -> None:
        import psycopg2

        connection = psycopg2.connect(f"{POSTGRES_SERVER}/postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()

    def count_messages(self) -> int:
        """Rows in the chat plugin's messages table (read by a separate connection)."""
        if self.kind == "sqlite":
            import sqlite3

            with sqlite3.connect(self.path) as connection:
                return connection.execute("SELECT COUNT(*) FROM chat_message").fetchone()[0]
        import psycopg2

        connection = psycopg2.connect(self.url)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT COUNT(*) FROM chat_message")
                return cursor.fetchone()[0]
        finally:
            connection.close()

    def drop(self) -> None:
        if self.kind == "sqlite":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        else:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class Api:
    """Blocking JSON calls to a vachat server (setup and checks only, never measured)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def raw(self, method: str, path: str, body: Any = None, token: str | None = None) -> bytes:
        """The answer's body as sent; RuntimeError for an error status."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{method} {path}: {error.code} {error.read()[:300]!r}") from None

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """The answer's `data`."""
        return json.loads(self.raw(method, path, body, token))["data"]

    def sign_up(self, n: int, prefix: str) -> list[dict[str, str]]:
        """`n` new accounts, signed in: [{"id", "token"}] (access tokens last 15 minutes)."""
        started = time.monotonic()

        def one(i: int) -> dict[str, str]:
            answer = self.call("POST", "/api/auth/register", {
                "email": f"{prefix}{i}@bench.example", "password": PASSWORD, "displayName": f"{prefix} {i}"})
            return {"id": answer["user"]["id"], "token": answer["tokens"]["accessToken"]}

        with ThreadPoolExecutor(SETUP_CONCURRENCY) as pool:
            users = list(pool.map(one, range(n)))
        log(f"{n} accounts signed up in {time.monotonic() - started:.1f}s")
        return users

    def create_conversation(self, token: str, title: str, *, public: bool = False) -> str:
        return self.call("POST", "/api/chat/conversations", {"title": title, "isPublic": public}, token)["id"]

    def send_message(self, token: str, conversation_id: str, content: str) -> dict[str, Any]:
        return self.call("POST", "/api/chat/message", {"conversationId": conversation_id, "content": content}, token)


@contextlib.contextmanager
def running_vachat(database: str, tag: str, *, bcrypt_rounds: int = 10,
                   env: dict[str, str] | None = None) -> Iterator[tuple[Any, "Api", BenchDatabase]]:
    """A vachat server on a fresh database, pinned to the server core: (process, Api, database).
    Both are gone when the block ends. `env` adds to (or overrides) `server_env`."""
    port = free_port()
    db = BenchDatabase(database, f"{tag}-{port}")
    try:
        server = start_server(server_cmd(), dict(server_env(port, db.url, bcrypt_rounds), **(env or {})), port,
                              ready_timeout=60)
        try:
            yield server, Api(port), db
        finally:
            stop(server)
    finally:
        db.drop()


def add_database_arg(ap: Any) -> None:
    ap.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite",
                    help=f"vachat's database (PostgreSQL: a fresh database on {POSTGRES_SERVER}, dropped after)")
