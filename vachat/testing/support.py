"""What every part of ``vachat.testing`` shares: the bounded waits, ``eventually()``, the
markers of tests that need the shared services, and the pytest configuration the plugin adds."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable

import pytest


# Every wait in a test is bounded; a frame that has not come in this long (s) is not coming.
DEFAULT_WAIT = 5.0


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
