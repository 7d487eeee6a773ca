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

The package, one concern per module (everything is importable from ``vachat.testing``):
``support`` (``eventually()``, the ``needs_*`` markers, the bounded waits), ``fixtures`` (the
plugin fixtures: settings, plugins, databases, ``app``), ``clients`` (``fetch``, ``ws_connect``,
``WsClient``, ``Response``), ``frames`` (raw WebSocket frames), ``processes``
(``server_process``, ``ServerProcess``, ``free_port``) and ``accounts`` (``make_user``,
``admin_user``). ``vachat.testing_auth`` and ``vachat.testing_seaweedfs`` are beside it.
"""

from __future__ import annotations

from .support import (
    DEFAULT_WAIT, WARNING_FILTERS, pytest_configure, needs_postgres, needs_redis,
    needs_shared_services, eventually,
)
from .fixtures import (
    TEST_SECRET, TEST_REFRESH_SECRET, vachat_database_url, vachat_redis_url, vachat_config,
    vachat_plugins, make_test_settings, reset_database, MARKER_ARGUMENTS, requested_plugins,
    plugin_under_test, app, production_http_server,
)
from .frames import (
    raw_upgrade, client_frame, parse_frames,
)
from .clients import (
    Response, assert_error, error_fields, login, auth_headers_for, fetch, WsClient, open_websocket,
    ws_connect,
)
from .processes import (
    SERVER_START_TIMEOUT, free_port, ServerProcess, server_process,
)
from .accounts import (
    DEFAULT_TEST_PASSWORD, AccountUser, make_user, admin_user,
)
from ..testing_seaweedfs import S3Server, seaweedfs

__all__ = ["DEFAULT_WAIT", "WARNING_FILTERS", "pytest_configure", "needs_postgres", "needs_redis",
           "needs_shared_services", "eventually", "TEST_SECRET", "TEST_REFRESH_SECRET",
           "vachat_database_url", "vachat_redis_url", "vachat_config", "vachat_plugins",
           "make_test_settings", "reset_database", "MARKER_ARGUMENTS", "requested_plugins",
           "plugin_under_test", "app", "production_http_server", "raw_upgrade", "client_frame",
           "parse_frames", "Response", "assert_error", "error_fields", "login", "auth_headers_for",
           "fetch", "WsClient", "open_websocket", "ws_connect", "SERVER_START_TIMEOUT",
           "free_port", "ServerProcess", "server_process", "DEFAULT_TEST_PASSWORD", "AccountUser",
           "make_user", "admin_user", "S3Server", "seaweedfs"]
