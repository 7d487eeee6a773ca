"""The plugin fixtures: the settings (``vachat_config``, ``make_test_settings``), the plugins a test
asks for (``vachat_plugins``, ``@pytest.mark.vachat``), the databases and the started ``app``."""

from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse, urlunparse

import pytest

from .. import testing_auth
from ..app import VachatApplication
from ..config import Settings, load_settings


TEST_SECRET = "test-secret-" + "x" * 40
TEST_REFRESH_SECRET = "test-refresh-secret-" + "y" * 40


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


@functools.lru_cache(maxsize=None)
def plugin_under_test(test_file: Path) -> str | None:
    """The installed plugin whose package folder holds ``test_file``, else the one whose
    project folder (the package's parent) alone holds it (found once per test file)."""
    import importlib.util

    from ..plugin_manager import installed_entry_points

    test_file = test_file.resolve()
    parents: list[tuple[str, Path]] = []
    for entry_point, _, _ in installed_entry_points():
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
    from ..server import http_server as make_production_server

    http_server.conn_params = make_production_server(app).conn_params
    return http_server
