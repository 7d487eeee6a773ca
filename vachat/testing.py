"""pytest fixtures for vachat and its plugins (a pytest plugin, registered as ``pytest11``).

Installing vachat gives every test suite, the core's and a plugin author's, the same tools:

``app``
    A started ``VachatApplication`` on a migrated, emptied database, with the core and the
    plugins the test names: ``@pytest.mark.vachat(plugins=["chat", ("mine", module)])`` (installed
    plugins by name, uninstalled ones as ``(name, module)``; what they ``REQUIRE`` comes along).
    Without a name it loads the plugin under test: the installed plugin whose package (or
    project folder) holds the test file; other installed plugins stay out. Settings overrides
    come from ``config={...}`` (by attribute name; ``plugin_sections={"name": {...}}`` sets
    ``[plugins.<name>]``) or by overriding the ``vachat_config`` / ``vachat_plugins`` fixtures.
``fetch``
    ``await fetch(path, method="GET", json=None, headers=None, user=None)`` → ``Response``
    with ``.code``, ``.headers``, ``.body`` and ``.json``. Never raises on 4xx/5xx.
``ws_connect``
    ``await ws_connect(user=None, headers=None, path="/ws")`` → ``WsClient``.
``server_process``
    Starts real ``vachat serve`` processes (multi-node and shutdown tests).
``make_user``
    ``await make_user(email=None, password=None, role="user", permissions=None, **fields)`` →
    ``AccountUser`` (``.id``, ``.email``, ``.password``, ``.access_token``, ``.refresh_token``,
    ``.session_id``, ``.auth_headers``): a real account signed in with real tokens.
``admin_user``
    An ``AccountUser`` with the ``admin`` role (``*``).
``seaweedfs``
    A real S3 server for the session (``vachat.testing_seaweedfs``): ``S3Server`` with
    ``endpoint``, credentials, ``env(bucket, prefix)`` and ``client()``; skips where the ``weed``
    binary is missing, fails instead when ``CI=true``.

``user=`` is a user id string (authenticated by the test auth plugin as ``Bearer test:<id>``;
grant permissions with ``headers={"X-Test-Permissions": "files.access_all"}``) or any object with
an ``auth_headers`` mapping: an ``AccountUser``, or the ``Response`` of ``login(fetch, e, p)``.
For a real account with a permission, ``make_user(role="auditor", permissions=["audit.read"])``.

Databases: SQLite in a temporary directory by default; when ``VACHAT_TEST_DATABASE_URL`` is
set (``postgresql://…``) a fresh database is created on that server for the session and
dropped after. ``VACHAT_TEST_REDIS_URL`` switches broker, rate limits and caches to Redis;
an unreachable service then fails the run, it never skips.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlparse, urlunparse

import pytest
import tornado.httpclient
import tornado.websocket

from . import testing_auth
from .app import VachatApplication
from .config import Settings, load_settings
from .testing_seaweedfs import S3Server, seaweedfs  # noqa: F401 (a fixture of this pytest plugin)

__all__ = ["eventually", "needs_postgres", "needs_redis", "needs_shared_services", "raw_upgrade", "client_frame", "parse_frames", "Response", "WsClient", "ServerProcess", "assert_error", "error_fields", "login", "AccountUser", "make_test_settings", "reset_database", "S3Server"]

# Every wait in a test is bounded; a frame that has not come in this long (s) is not coming.
DEFAULT_WAIT = 5.0
# How long a spawned server may take to report ready (s): imports, migrations, pool warm-up.
SERVER_START_TIMEOUT = 30.0

TEST_SECRET = "test-secret-" + "x" * 40
TEST_REFRESH_SECRET = "test-refresh-secret-" + "y" * 40


# pytest-tornado (the ``gen_test`` marker and ``io_loop``) predates Tornado 6.x's asyncio
# integration; these warnings come from it, not from the code under test.
WARNING_FILTERS = (
    "ignore::DeprecationWarning:pytest_tornado.*",
    "ignore:There is no current event loop:DeprecationWarning",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vachat(config=None, plugins=None): settings overrides and the plugins for the app fixture")
    for line in WARNING_FILTERS:
        config.addinivalue_line("filterwarnings", line)


# ---------------------------------------------------------------------------
# waiting on events, and tests that need the shared services
# ---------------------------------------------------------------------------

# A test that needs PostgreSQL or Redis runs in the suite's second pass, which sets these
# variables; without them it is skipped, so the suite still runs on a machine with nothing but
# Python. With them set, an unreachable service fails the session (see the fixtures below).
needs_postgres = pytest.mark.skipif(
    not os.environ.get("VACHAT_TEST_DATABASE_URL"),
    reason="needs PostgreSQL: set VACHAT_TEST_DATABASE_URL (the suite's second pass does)")
needs_redis = pytest.mark.skipif(
    not os.environ.get("VACHAT_TEST_REDIS_URL"),
    reason="needs Redis: set VACHAT_TEST_REDIS_URL (the suite's second pass does)")
# Several nodes behave as one only through a shared broker (and, on SQLite, a shared file).
needs_shared_services = needs_redis


async def eventually(predicate: Callable[[], Any], timeout: float = DEFAULT_WAIT, what: str = "the condition",
                     interval: float = 0.02) -> Any:
    """Poll ``predicate`` (a plain or async callable) until it returns something truthy, and
    return that; fail with ``what`` after ``timeout`` seconds.

    For conditions no event announces (a count in another process, a file appearing). Where an
    event exists (a frame, a log line), wait on it instead.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------
# services: database and Redis for the whole session
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def vachat_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterable[str]:
    """A database URL for this test session: a temporary SQLite file, or a fresh PostgreSQL
    database on the server named by ``VACHAT_TEST_DATABASE_URL``."""
    server_url = os.environ.get("VACHAT_TEST_DATABASE_URL")
    if not server_url:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'vachat-test.db'}"
        return
    import psycopg2

    name = f"vachat_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = psycopg2.connect(server_url, connect_timeout=5)  # unreachable: the session fails
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    parsed = urlparse(server_url)
    yield urlunparse(parsed._replace(path=f"/{name}"))
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def vachat_redis_url() -> str:
    """``VACHAT_TEST_REDIS_URL`` (checked reachable), or "" for the embedded backends."""
    url = os.environ.get("VACHAT_TEST_REDIS_URL", "")
    if url:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=5).ping()  # unreachable: the session fails
    return url


@pytest.fixture
def vachat_config() -> dict[str, Any]:
    """Settings overrides (attribute → value) for the ``app`` fixture; override to configure."""
    return {}


@pytest.fixture
def vachat_plugins() -> list[tuple[str, Any]]:
    """Extra ``(name, module)`` plugins for the ``app`` fixture; override to add your own."""
    return []


def make_test_settings(database_url: str, redis_url: str = "", tmp_path: Path | None = None, **overrides: Any) -> Settings:
    """Settings for a test server: fast bcrypt, generous limits, quiet, temporary paths."""
    base: dict[str, Any] = {
        "env": "test",
        "host": "127.0.0.1",
        "database_url": database_url,
        "redis_url": redis_url,
        "jwt_secret": TEST_SECRET,
        "jwt_refresh_secret": TEST_REFRESH_SECRET,
        "bcrypt_rounds": 4,
        # Tests make many requests from one address; the tests of limits set their own.
        "rate_limit_global": "100000/60s",
        "rate_limit_auth": "100000/60s",
        "rate_limit_auth_account": "100000/60s",
        "ws_rate_limit": "100000/10s",
        "ws_max_per_ip": 10000,
        "ws_max_per_user": 1000,
        "log_dir": "",
        "database_pool_size": 4,
        "executor_threads": 4,
        "shutdown_grace": 5,
    }
    if tmp_path is not None:
        base["data_dir"] = str(tmp_path / "var")
    plugin_sections = overrides.pop("plugin_sections", None)
    environ = overrides.pop("environ", {})
    base.update(overrides)
    settings = load_settings(environ=environ, overrides=base)
    return settings.replace(plugin_sections=plugin_sections) if plugin_sections is not None else settings


def reset_database(app: VachatApplication) -> None:
    """Apply pending migrations, then empty every table but the migration histories."""
    app.migrations().apply()
    engine = app.db.engine
    tables = [t for t in engine.get_tables() if not t.startswith("migratehistory")]
    if not tables:
        return
    if app.db.is_postgres:
        engine.execute_sql("TRUNCATE {} RESTART IDENTITY CASCADE".format(", ".join(f'"{t}"' for t in tables)))
    else:
        # A virtual table (FTS5) is emptied through itself; its shadow tables must not be touched.
        virtual = [row[0] for row in engine.execute_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%'")]
        engine.execute_sql("PRAGMA foreign_keys = OFF")
        for table in tables:
            shadow = any(table.startswith(f"{name}_") for name in virtual)
            if not table.startswith("sqlite_") and not shadow:
                engine.execute_sql(f'DELETE FROM "{table}"')
        engine.execute_sql("PRAGMA foreign_keys = ON")
    engine.close()


MARKER_ARGUMENTS = {"config", "plugins"}


def requested_plugins(request: pytest.FixtureRequest, extra: Iterable[Any]) -> tuple[list[str], list[tuple[str, Any]]]:
    """The installed plugins (by name) and uninstalled ``(name, module)`` ones a test asks for."""
    names: list[str] = []
    modules: list[tuple[str, Any]] = []
    named = False
    for marker in reversed(list(request.node.iter_markers("vachat"))):
        unknown = set(marker.kwargs) - MARKER_ARGUMENTS or marker.args
        if unknown:
            raise pytest.UsageError(f"@pytest.mark.vachat takes only config= and plugins=, not {sorted(map(str, unknown))}"
                                    " (settings, plugin_sections and environ go inside config=)")
        if "plugins" in marker.kwargs:
            named = True
        for entry in marker.kwargs.get("plugins") or []:
            (names.append(entry) if isinstance(entry, str) else modules.append(tuple(entry)))
    modules.extend(extra)
    if not named:
        under_test = plugin_under_test(Path(str(request.node.fspath)))
        names.extend([under_test] if under_test else [])
    return names, modules


def plugin_under_test(test_file: Path) -> str | None:
    """The installed plugin whose package folder holds ``test_file``, else the one whose
    project folder (the package's parent) alone holds it."""
    import importlib.metadata
    import importlib.util

    test_file = test_file.resolve()
    parents: list[tuple[str, Path]] = []
    for entry_point in importlib.metadata.entry_points(group="vachat.plugins"):
        try:
            spec = importlib.util.find_spec(entry_point.value.partition(":")[0])
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.origin:
            continue
        package = Path(spec.origin).resolve().parent
        if package in test_file.parents:
            return entry_point.name
        parents.append((entry_point.name, package.parent))
    holders = [name for name, folder in parents if folder in test_file.parents]
    return holders[0] if len(holders) == 1 else None


@pytest.fixture
def app(request: pytest.FixtureRequest, io_loop: Any, vachat_database_url: str, vachat_redis_url: str,
        vachat_config: dict[str, Any], vachat_plugins: list[tuple[str, Any]], tmp_path: Path) -> Iterable[VachatApplication]:
    """A started application (the name pytest-tornado's ``http_server`` expects)."""
    config = dict(vachat_config)
    for marker in reversed(list(request.node.iter_markers("vachat"))):
        config.update(marker.kwargs.get("config") or {})
    names, modules = requested_plugins(request, vachat_plugins)
    settings = make_test_settings(config.pop("database_url", vachat_database_url),
                                  config.pop("redis_url", vachat_redis_url), tmp_path, **config)
    application = VachatApplication(settings, extra_plugins=[("testauth", testing_auth), *modules],
                                    only_plugins=names)
    application.db.bind()
    reset_database(application)
    if settings.redis_url == vachat_redis_url and vachat_redis_url:
        import redis

        client = redis.Redis.from_url(vachat_redis_url)
        client.flushdb()  # limits and caches from earlier tests must not leak into this one
        client.close()
    io_loop.run_sync(application.start)
    yield application
    io_loop.run_sync(application.shutdown)


@pytest.fixture
def production_http_server(http_server: Any, app: VachatApplication) -> Any:
    """pytest-tornado's ``http_server`` with the connection settings of ``vachat serve`` (body
    cap, idle and body timeouts), so in-process tests see what production clients see."""
    from .server import http_server as make_production_server

    http_server.conn_params = make_production_server(app).conn_params
    return http_server


# ---------------------------------------------------------------------------
# raw WebSocket: a client that reads only when told, which is how a stalled consumer looks
# ---------------------------------------------------------------------------


async def raw_upgrade(port: int, headers: dict[str, str], rcvbuf: int | None = None) -> tuple[socket.socket, bytes]:
    """A hand-made WebSocket client: returns the socket and the bytes after the 101 response.
    It reads only when the test says so, which is how a stalled consumer looks to the server."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    lines = [
        "GET /ws HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}", "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        assert chunk, "connection closed during the handshake"
        response += chunk
    head, _, rest = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock, rest


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 §5.3)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def parse_frames(buffer: bytes | bytearray) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete frames in ``buffer`` as ``(opcode, payload)``, and the unparsed rest."""
    frames, position = [], 0
    while len(buffer) - position >= 2:
        first, second = buffer[position], buffer[position + 1]
        assert first & 0x80, "fragmented frame"
        assert not first & 0x70, "RSV bits set: compressed or unknown extension"
        size, start = second & 0x7F, position + 2
        if size == 126:
            if len(buffer) < start + 2:
                break
            (size,) = struct.unpack("!H", buffer[start:start + 2])
            start += 2
        elif size == 127:
            if len(buffer) < start + 8:
                break
            (size,) = struct.unpack("!Q", buffer[start:start + 8])
            start += 8
        assert not second & 0x80, "server frames must not be masked"
        if len(buffer) < start + size:
            break
        frames.append((first & 0x0F, bytes(buffer[start:start + size])))
        position = start + size
    return frames, bytes(buffer[position:])


# ---------------------------------------------------------------------------
# clients
# ---------------------------------------------------------------------------


@dataclass
class Response:
    code: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def data(self) -> Any:
        return self.json["data"]

    @property
    def auth_headers(self) -> dict[str, str]:
        """For the answer of a sign-in (``login``, register): its access token, so the response
        itself can be passed as ``user=``."""
        return {"Authorization": f"Bearer {self.data['tokens']['accessToken']}"}


def assert_error(response: Response, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is the error envelope with this status and code; return its body."""
    assert response.code == status, response.body
    body = response.json
    assert body["success"] is False and body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"], body
    assert response.headers["Content-Type"].startswith("application/json")
    return body


def error_fields(body: dict[str, Any]) -> dict[str, str]:
    """A validation error's ``details`` as ``{field: message}``."""
    return {detail["field"]: detail["message"] for detail in body.get("details") or []}


async def login(fetch: Callable[..., Any], email: str, password: str, **kwargs: Any) -> Response:
    """``POST /api/auth/login`` through ``fetch``: a new session for an existing user."""
    return await fetch("/api/auth/login", method="POST", json={"email": email, "password": password}, **kwargs)


def auth_headers_for(user: Any) -> dict[str, str]:
    if user is None:
        return {}
    if isinstance(user, str):
        return {"Authorization": f"Bearer test:{user}"}
    headers = getattr(user, "auth_headers", None)
    if headers is None and isinstance(user, dict):
        headers = user.get("auth_headers")
    if headers is None:
        raise TypeError(f"cannot authenticate as {user!r}: give a user id or an object with auth_headers")
    return dict(headers)


@pytest.fixture
def fetch(production_http_server: Any, base_url: str) -> Callable[..., Any]:
    """``await fetch(path, method="GET", json=None, body=None, headers=None, user=None)``."""
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)

    async def fetch(path: str, method: str = "GET", *, json: Any = None, body: bytes | str | None = None,
                    headers: dict[str, str] | None = None, user: Any = None, **kwargs: Any) -> Response:
        all_headers = auth_headers_for(user)
        if json is not None:
            body = _json_module.dumps(json)
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        request = tornado.httpclient.HTTPRequest(
            base_url + path, method=method, headers=all_headers, body=body,
            allow_nonstandard_methods=True, request_timeout=30, follow_redirects=False, **kwargs)
        response = await client.fetch(request, raise_error=False)
        if response.code == 599:
            raise response.error  # the connection failed: no HTTP answer to assert on
        return Response(response.code, response.headers, response.body or b"")

    yield fetch
    client.close()


_json_module = json


class WsClient:
    """A WebSocket client that keeps every frame, so a test can wait for the one it needs."""

    def __init__(self, connection: tornado.websocket.WebSocketClientConnection) -> None:
        self.connection = connection
        self.frames: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._ids = itertools.count(1)
        self._closed = False
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            message = await self.connection.read_message()
            if message is None:
                self._closed = True
                self._arrived.set()
                return
            self.frames.append(json.loads(message))
            self._arrived.set()

    def send(self, event_type: str, data: Any = None, id: Any = None) -> None:
        frame: dict[str, Any] = {"type": event_type}
        if data is not None:
            frame["data"] = data
        if id is not None:
            frame["id"] = id
        self.send_raw(json.dumps(frame))

    def send_raw(self, text: str | bytes) -> None:
        self.connection.write_message(text)

    async def receive(self, event_type: str | None = None, *, id: Any = None, timeout: float = DEFAULT_WAIT) -> dict[str, Any]:
        """The next unconsumed frame (of ``event_type`` / with ``id`` when given)."""

        def matches(frame: dict[str, Any]) -> bool:
            return (event_type is None or frame.get("type") == event_type) and (id is None or frame.get("id") == id)

        async def wait() -> dict[str, Any]:
            while True:
                for index, frame in enumerate(self.frames):
                    if matches(frame):
                        return self.frames.pop(index)
                if self._closed:
                    raise ConnectionError(f"socket closed ({self.close_code} {self.close_reason}) "
                                          f"before a {event_type or 'frame'} arrived")
                self._arrived.clear()
                await self._arrived.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def request(self, event_type: str, data: Any = None, *, timeout: float = DEFAULT_WAIT) -> dict[str, Any]:
        """Send with a fresh id and return the one reply (``ack``, ``error`` or ``pong``)."""
        request_id = f"r{next(self._ids)}"
        self.send(event_type, data, id=request_id)
        return await self.receive(id=request_id, timeout=timeout)

    async def closed(self, timeout: float = DEFAULT_WAIT) -> tuple[int | None, str | None]:
        """Wait for the server to close the socket; returns ``(code, reason)``."""
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code, self.close_reason

    @property
    def close_code(self) -> int | None:
        return self.connection.close_code

    @property
    def close_reason(self) -> str | None:
        return self.connection.close_reason

    def close(self) -> None:
        self.connection.close()
        self._reader.cancel()


async def open_websocket(url: str, headers: dict[str, str] | None = None) -> WsClient:
    request = tornado.httpclient.HTTPRequest(url, headers=headers or {}, request_timeout=DEFAULT_WAIT)
    connection = await tornado.websocket.websocket_connect(request)
    return WsClient(connection)


@pytest.fixture
def ws_connect(production_http_server: Any, http_port: int) -> Callable[..., Any]:
    """``await ws_connect(user=None, headers=None, path="/ws")`` → a connected ``WsClient``."""
    clients: list[WsClient] = []

    async def ws_connect(user: Any = None, headers: dict[str, str] | None = None, path: str = "/ws") -> WsClient:
        all_headers = auth_headers_for(user)
        all_headers.update(headers or {})
        client = await open_websocket(f"ws://127.0.0.1:{http_port}{path}", all_headers)
        clients.append(client)
        return client

    yield ws_connect
    for client in clients:
        client.close()


# ---------------------------------------------------------------------------
# real server processes
# ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServerProcess:
    """A ``vachat serve`` child process on its own port; stopped when the test ends."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> "ServerProcess":
        env = {**os.environ, **self.env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self._log = open(self.log_path, "ab")
        # `python -m vachat` runs whatever vachat this interpreter imports (checkout, editable or
        # wheel), and in the test's own directory, so the default data directory is the test's too.
        self.process = subprocess.Popen([sys.executable, "-m", "vachat", "serve"], env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, cwd=str(self.log_path.parent))
        return self

    async def wait_ready(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
                try:
                    response = await client.fetch(self.base_url + "/health/ready", raise_error=False, request_timeout=2)
                    if response.code == 200:
                        return
                except OSError:
                    pass  # not listening yet
                await asyncio.sleep(0.05)
            raise TimeoutError(f"server not ready after {timeout}s:\n{self.output()}")
        finally:
            client.close()

    async def fetch(self, path: str, method: str = "GET", *, json: Any = None,
                    headers: dict[str, str] | None = None, timeout: float = 60) -> Response:
        """A request to this server (never raises on 4xx/5xx)."""
        all_headers = dict(headers or {})
        body = None
        if json is not None:
            body = _json_module.dumps(json)
            all_headers["Content-Type"] = "application/json"
        client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        try:
            response = await client.fetch(self.base_url + path, method=method, headers=all_headers, body=body,
                                          raise_error=False, request_timeout=timeout)
        finally:
            client.close()
        if response.code == 599:
            raise response.error
        return Response(response.code, response.headers, response.body or b"")

    def terminate(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout: float = 40.0) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"server still running after {timeout}s:\n{self.output()}")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if getattr(self, "_log", None):
            self._log.close()


@pytest.fixture
def server_process(request: pytest.FixtureRequest, tmp_path: Path, vachat_database_url: str,
                   vachat_redis_url: str) -> Callable[..., Any]:
    """``server_process(env={...})`` → a started ``ServerProcess`` (await ``wait_ready()``).

    The child runs in the test environment with the session's database and Redis, the test
    auth plugin loaded, and migrations applied at start-up. Its working directory is
    ``tmp_path``; the project under test is on its import path, so ``VACHAT_PLUGIN_MODULES`` may
    name test modules such as ``tests.plugins.x``.
    """
    import_path = os.pathsep.join(filter(None, [str(request.config.rootpath), os.environ.get("PYTHONPATH")]))
    started: list[ServerProcess] = []

    def spawn(env: dict[str, str] | None = None) -> ServerProcess:
        base = {
            "VACHAT_ENV": "test", "DATABASE_URL": vachat_database_url, "REDIS_URL": vachat_redis_url,
            "JWT_SECRET": TEST_SECRET, "JWT_REFRESH_SECRET": TEST_REFRESH_SECRET, "BCRYPT_ROUNDS": "4",
            "LOG_DIR": "", "AUTO_MIGRATE": "1", "RATE_LIMIT_GLOBAL": "100000/60s", "RATE_LIMIT_AUTH": "100000/60s",
            "VACHAT_PLUGIN_MODULES": "testauth=vachat.testing_auth",
            "PYTHONPATH": import_path,
        }
        base.update(env or {})
        server = ServerProcess(base, tmp_path / f"server-{len(started)}.log").start()
        started.append(server)
        return server

    yield spawn
    for server in started:
        server.kill()


# ---------------------------------------------------------------------------
# accounts: real users with real credentials (vachat.accounts)
# ---------------------------------------------------------------------------

# Meets the password policy and is on no common list; tests may log in with it.
DEFAULT_TEST_PASSWORD = "Vachat-Test-9x!"
_user_numbers = itertools.count(1)


@dataclass
class AccountUser:
    """A user made by ``make_user``: its credentials and a signed-in session."""

    id: str
    email: str
    password: str
    role: str
    access_token: str
    refresh_token: str
    session_id: str

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@pytest.fixture
def make_user(app: VachatApplication) -> Callable[..., Any]:
    """``await make_user(email=None, password=None, role="user", permissions=None, **fields)``
    → ``AccountUser`` with ``.id .email .password .access_token .refresh_token .session_id
    .auth_headers``, signed in through the same session code as ``POST /api/auth/login``.

    The user is written directly (no request, so no rate limit is spent); ``fields`` are
    ``User`` columns (``is_active=False``, ``tier="pro"``, ``first_name=…``). A ``role`` that
    does not exist is created with ``permissions`` (default none).
    """
    from .accounts.models import Role
    from .accounts.passwords import hash_password
    from .accounts.sessions import create_session
    from .accounts.users import create_account

    async def make_user(email: str | None = None, password: str | None = None, role: str = "user",
                        permissions: list[str] | None = None, **fields: Any) -> AccountUser:
        number = next(_user_numbers)
        email = (email or f"user{number}-{secrets.token_hex(3)}@example.test").strip().lower()
        password = password or DEFAULT_TEST_PASSWORD
        hashed = await hash_password(app, password)

        def create() -> str:
            with Role._meta.database.atomic():
                if not Role.select().where(Role.name == role).exists():
                    Role.create(name=role, permissions=list(permissions or []))
                elif permissions is not None:
                    Role.update(permissions=list(permissions)).where(Role.name == role).execute()
                return create_account(email, hashed, role=role, **fields).id

        user_id = await app.db.run(create)
        session_id, tokens = await create_session(app, user_id, ip="127.0.0.1", user_agent="vachat-tests")
        return AccountUser(user_id, email, password, role, tokens["accessToken"], tokens["refreshToken"], session_id)

    return make_user


@pytest.fixture
def admin_user(io_loop: Any, make_user: Callable[..., Any]) -> AccountUser:
    """A signed-in user with the seeded ``admin`` role (permission ``*``)."""
    return io_loop.run_sync(lambda: make_user(role="admin"))
