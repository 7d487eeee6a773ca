"""Review of the real-time core: shutdown, the database at shutdown, Redis pub/sub isolation.

This module doubles as a plugin for the ``vachat serve`` children the tests start
(``VACHAT_PLUGIN_MODULES=review=tests.nodes.test_shutdown_and_pubsub``): a request running a long query,
a start-up hook that takes a while, and REST triggers for a broadcast and a disconnect.
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import urlsplit, urlunsplit

import pytest

from vachat.hub import encode_event
from vachat.plugin_api import ApiHandler, endpoint, hookimpl
from vachat.testing import eventually, needs_redis

__version__ = "1.0"

PLUGINS = "testauth=vachat.testing_auth,review=tests.nodes.test_shutdown_and_pubsub"
_state = {"querying": 0}

needs_redis = pytest.mark.skipif(not os.environ.get("VACHAT_TEST_REDIS_URL"),
                                 reason="needs VACHAT_TEST_REDIS_URL")


# ---------------------------------------------------------------------------
# the plugin side (runs in the server children)
# ---------------------------------------------------------------------------


def _long_query(app):
    _state["querying"] += 1
    if app.db.is_postgres:
        sql = "SELECT pg_sleep(120)"
    else:  # minutes of CPU in SQLite's VM
        sql = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 4000000000) "
               "SELECT count(*) FROM c")
    app.db.engine.execute_sql(sql).fetchone()


class SlowQueryHandler(ApiHandler):
    @endpoint("A query that outlasts the shutdown grace", auth=False)
    async def get(self):
        await self.application.db.run(_long_query, self.application)
        self.respond({"finished": True})


class StateHandler(ApiHandler):
    @endpoint("How many slow queries are running", auth=False)
    async def get(self):
        self.respond(dict(_state))


class ShoutHandler(ApiHandler):
    @endpoint("Publish review-shout to the caller's user room")
    async def post(self):
        await self.application.hub.publish(f"user:{self.actor.id}", "review-shout", {"from": "other"})
        self.respond({})


class DisconnectHandler(ApiHandler):
    @endpoint("Close the caller's sockets on every node")
    async def post(self):
        await self.application.hub.disconnect(user_id=self.actor.id, reason="review")
        self.respond({})


@hookimpl
def vachat_routes(app):
    return [(r"/api/review/slow-query", SlowQueryHandler), (r"/api/review/state", StateHandler),
            (r"/api/review/shout", ShoutHandler), (r"/api/review/disconnect", DisconnectHandler)]


@hookimpl
async def vachat_startup(app):
    delay = float(os.environ.get("REVIEW_SLOW_STARTUP") or 0)
    if delay:
        print("review: slow start-up begins", flush=True)
        await asyncio.sleep(delay)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------




# ---------------------------------------------------------------------------
# shutdown
# ---------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=90)
async def test_sigterm_does_not_wait_past_the_grace_for_a_running_query(server_process):
    """SPEC §9: in-flight requests get SHUTDOWN_GRACE, then the node closes the database and
    exits 0. A query still running must not keep the process alive for as long as it lasts."""
    server = server_process({"VACHAT_PLUGIN_MODULES": PLUGINS, "SHUTDOWN_GRACE": "1"})
    await server.wait_ready()
    in_flight = asyncio.ensure_future(server.fetch("/api/review/slow-query"))

    async def querying():
        return (await server.fetch("/api/review/state")).data["querying"] >= 1

    await eventually(querying, 10, "the slow query to start")
    server.terminate()
    # The query lasts minutes: exiting within this timeout means nobody waited for it.
    assert await server.wait_exit(timeout=15) == 0
    assert '"stopped"' in server.output()
    in_flight.cancel()


@pytest.mark.gen_test(timeout=90)
async def test_sigterm_during_start_up_still_exits_0(server_process):
    server = server_process({"VACHAT_PLUGIN_MODULES": PLUGINS, "REVIEW_SLOW_STARTUP": "3"})

    async def starting():
        assert server.process.poll() is None, server.output()
        return "review: slow start-up begins" in server.output()

    await eventually(starting, 30, "the start-up hook")
    server.terminate()
    assert await server.wait_exit(timeout=30) == 0, server.output()
    assert '"stopped"' in server.output()


# ---------------------------------------------------------------------------
# Redis: pub/sub channels are server-wide, databases are not
# ---------------------------------------------------------------------------


@needs_redis
@pytest.mark.gen_test(timeout=90)
async def test_a_deployment_on_another_redis_database_is_not_heard(app, ws_connect, server_process,
                                                                   vachat_redis_url):
    """Two deployments (or two test runs) sharing a Redis server on different database numbers
    must not receive each other's room broadcasts, nor obey each other's control messages."""
    parts = urlsplit(vachat_redis_url)
    database = int(parts.path.lstrip("/") or 0)
    other = server_process({"VACHAT_PLUGIN_MODULES": PLUGINS,
                            "REDIS_URL": urlunsplit(parts._replace(path=f"/{(database + 1) % 16}"))})
    await other.wait_ready()
    alice = await ws_connect(user="alice")
    await alice.receive("ready")
    as_alice = {"Authorization": "Bearer test:alice"}
    for action in ("shout", "disconnect"):
        assert (await other.fetch(f"/api/review/{action}", method="POST", json={}, headers=as_alice)).code == 200

    # A barrier on this deployment's own channel: Redis delivers publications to a subscriber in
    # the order it ran them, so whatever the other deployment published has arrived before it.
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(vachat_redis_url)
    try:
        await client.publish(app.broker._channel("user:alice"),
                             b"0123456789abcdef|" + encode_event("review-barrier", {}))
    finally:
        await client.aclose()
    await alice.receive("review-barrier")
    assert [frame["type"] for frame in alice.frames] == []
    assert alice.close_code is None
    other.terminate()
    assert await other.wait_exit() == 0


# ---------------------------------------------------------------------------
# /health and plugin declarations
# ---------------------------------------------------------------------------


def _flaky_health_plugin():
    """A plugin whose health declaration works once per application, then raises (a transient
    bug in it)."""
    import types

    module = types.ModuleType("review_flaky_health")
    seen = set()

    async def probe():
        return {"status": "ok"}

    @hookimpl
    def vachat_health_checks(app):
        if id(app) in seen:
            raise RuntimeError("transient")
        seen.add(id(app))
        return {"probe": probe}

    module.vachat_health_checks = vachat_health_checks
    return module


FLAKY_HEALTH = _flaky_health_plugin()


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.gen_test
async def test_health_does_not_rerun_plugin_declarations(strict, app, fetch):
    """A declaration hook is collected once: /health running it per request turned a plugin's
    transient failure into the plugin being disabled at runtime (or, strict, /health 500s)."""
    for _ in range(3):
        response = await fetch("/health")
        assert response.code == 200, response.body
        assert response.json["checks"]["flaky.probe"] == {"status": "ok"}
    assert app.plugins.is_enabled("flaky")


@pytest.fixture
def vachat_plugins(request):
    return [("flaky", FLAKY_HEALTH)] if "strict" in request.fixturenames else []


@pytest.fixture
def vachat_config(request):
    return {"plugins_strict": request.getfixturevalue("strict")} if "strict" in request.fixturenames else {}
