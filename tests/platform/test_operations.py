"""Operations endpoints: health (embedded and with PostgreSQL + Redis), readiness, metrics,
the OpenAPI document built from the handlers' declarations, and the docs page."""

import asyncio
import os
import types
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.plugins import sample
from vachat.plugin_api import hookimpl
from vachat.testing import needs_postgres, needs_redis

pytestmark = pytest.mark.vachat(plugins=[("sample", sample), "example"])


@pytest.mark.gen_test
async def test_health_reports_every_check(app, fetch):
    response = await fetch("/health")
    assert response.code == 200
    report = response.json
    assert report["status"] == "healthy"
    assert report["environment"] == "test" and report["version"] == app.version
    assert report["uptime"] >= 0 and report["timestamp"].endswith("Z")
    checks = report["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["database"]["engine"] == ("postgresql" if os.environ.get("VACHAT_TEST_DATABASE_URL") else "sqlite")
    expected_redis = "ok" if os.environ.get("VACHAT_TEST_REDIS_URL") else "disabled"
    assert checks["redis"]["status"] == expected_redis
    assert checks["memory"]["status"] == "ok" and checks["memory"]["rssBytes"] > 0
    assert checks["disk"]["status"] == "ok"


@pytest.mark.gen_test
async def test_live_and_ready(fetch):
    assert (await fetch("/health/live")).json == {"status": "ok"}
    ready = await fetch("/health/ready")
    assert ready.code == 200 and ready.json["status"] == "ready"


@pytest.mark.gen_test
@pytest.mark.vachat(config={"redis_url": "redis://127.0.0.1:1/0"})
async def test_unreachable_redis_degrades_but_serves(app, fetch, ws_connect):
    response = await fetch("/health")
    assert response.code == 503
    assert response.json["status"] == "degraded"
    assert response.json["checks"]["redis"]["status"] == "down"
    # Local delivery and in-memory limits carry on.
    assert (await fetch("/api/sample/widgets/known")).code == 200
    first, second = await ws_connect(user="alice"), await ws_connect(user="alice")
    await first.receive("ready")
    await second.receive("ready")
    await app.hub.publish("user:alice", "notice", {"n": 1})
    assert (await second.receive("notice"))["data"] == {"n": 1}


@pytest.mark.gen_test
async def test_database_down_gives_503_not_a_crash(app, fetch):
    app.db.closed = True  # what a lost database looks like to a request
    try:
        ready = await fetch("/health/ready")
        assert ready.code == 503 and ready.json["checks"]["database"]["status"] == "down"
        response = await fetch("/api/example/notes", user="alice")
        assert response.code == 503 and response.json["code"] == "UNAVAILABLE"
    finally:
        app.db.closed = False
    assert (await fetch("/api/example/notes", user="alice")).code == 200  # and recovers


@pytest.mark.gen_test
async def test_metrics_in_prometheus_format(fetch, ws_connect):
    await fetch("/api/sample/widgets/known")
    await fetch("/api/sample/widgets/missing")
    socket = await ws_connect(user="alice")
    await socket.receive("ready")
    response = await fetch("/metrics")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.body.decode()
    assert 'vachat_http_requests_total{method="GET",route="/api/sample/widgets/(?P<widget_id>[^/]+)",status="200"} 1.0' in text
    assert 'status="404"' in text
    assert "vachat_http_request_duration_seconds_bucket" in text
    assert "vachat_ws_connections 1.0" in text
    assert "vachat_example_notes_created_total" in text  # registered by a plugin


@pytest.mark.gen_test
async def test_openapi_is_built_from_the_declarations(app, fetch):
    response = await fetch("/api/openapi.json")
    assert response.code == 200
    document = response.json
    assert document["openapi"] == "3.1.0"
    operation = document["paths"]["/api/sample/widgets"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/sample.widget"}
    assert operation["security"] and "401" in operation["responses"] and "415" in operation["responses"]
    widget = document["components"]["schemas"]["sample.widget"]
    # The component is the very file that validates requests, with refs rewritten.
    assert widget["properties"]["owner"] == {"$ref": "#/components/schemas/core.pagination"}
    assert widget["required"] == app.schemas.get("sample/widget")["required"]
    path_item = document["paths"]["/api/sample/widgets/{widget_id}"]
    assert path_item["delete"]["x-permission"] == "sample.delete"
    listing = document["paths"]["/api/sample/widgets"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"page", "limit", "sortBy", "archived", "tag"}
    assert any(event["type"] == "sample-echo" for event in document["x-websocket-events"])
    for component in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(component)
    every_operation = [op for item in document["paths"].values() for op in item.values()]
    assert all(op["summary"] and op["responses"] for op in every_operation)


@pytest.mark.gen_test
async def test_docs_page(fetch):
    """The interactive reference loads this server's document, which lists plugins' routes and
    events (the page itself is tested in a browser: plugins/console/tests)."""
    response = await fetch("/api/docs")
    assert response.code == 200 and response.headers["Content-Type"].startswith("text/html")
    assert b"/api/docs/assets/init.js" in response.body
    assert b'url: "/api/openapi.json"' in (await fetch("/api/docs/assets/init.js")).body
    document = (await fetch("/api/openapi.json")).json
    assert "/api/sample/widgets" in document["paths"]
    assert "sample-echo" in {event["type"] for event in document["x-websocket-events"]}
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


@needs_postgres
@pytest.mark.gen_test(timeout=30)
async def test_postgres_connections_cut_give_503_then_recover(app, fetch):
    """Kill every server-side connection of this database: requests see 503, never 500, and
    the pool reconnects on its own."""
    import psycopg2

    assert (await fetch("/api/example/notes", user="alice")).code == 200
    admin = psycopg2.connect(os.environ["VACHAT_TEST_DATABASE_URL"])
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = %s AND pid <> pg_backend_pid()", (app.db.engine.database,))
    admin.close()
    codes = [(await fetch("/api/example/notes", user="alice")).code for _ in range(app.config.database_pool_size + 2)]
    assert set(codes) <= {200, 503}
    assert codes[-1] == 200


@needs_redis
@pytest.mark.gen_test
async def test_health_is_degraded_when_pub_sub_is_down_though_redis_answers(app, fetch, monkeypatch):
    assert (await fetch("/health")).json["checks"]["redis"]["status"] == "ok"
    monkeypatch.setattr(app.broker, "status", lambda: {"status": "down", "error": "SUBSCRIBE refused"})
    response = await fetch("/health")
    assert response.code == 503 and response.json["checks"]["redis"]["status"] == "down"


@pytest.mark.gen_test
async def test_a_failing_close_step_does_not_leave_the_database_open(app, monkeypatch, caplog):
    async def broken_close():
        raise TimeoutError("closing a connection timed out")

    real_close = app.broker.close
    monkeypatch.setattr(app.broker, "close", broken_close)
    await app.shutdown()
    assert app.db.closed
    assert any("closing the broker failed" in record.getMessage() for record in caplog.records)
    await real_close()  # stop its listener task before the test's loop goes away


@pytest.mark.gen_test
async def test_a_hanging_close_step_is_given_up_on_and_the_database_still_closes(app, monkeypatch, caplog):
    never = asyncio.Event()

    async def hanging_close():
        await never.wait()

    real_close = app.broker.close
    monkeypatch.setattr(app.broker, "close", hanging_close)
    monkeypatch.setattr("vachat.app.CLOSE_STEP_TIMEOUT", 0.2)
    await app.shutdown()
    assert app.db.closed
    [warning] = [record for record in caplog.records if record.getMessage() == "closing the broker did not finish in time; going on"]
    assert "hanging_close" in warning.awaiting[0] and "wait" in warning.awaiting[-1]  # where it waited
    await real_close()


def _shutdown_plugin(name: str, shutdown: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.vachat_shutdown = hookimpl(shutdown)  # type: ignore[attr-defined]
    return module


_STORED: list[str] = []


async def _hangs_at_shutdown(app: Any) -> None:
    await asyncio.Event().wait()


async def _stores_at_shutdown(app: Any) -> None:
    await asyncio.sleep(0)
    _STORED.append("stored")


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=[("a_hangs", _shutdown_plugin("a_hangs", _hangs_at_shutdown)),
                             ("b_stores", _shutdown_plugin("b_stores", _stores_at_shutdown))])
async def test_a_plugin_hanging_at_shutdown_is_given_up_on_and_the_next_one_still_shuts_down(app, monkeypatch, caplog):
    monkeypatch.setattr("vachat.app.CLOSE_STEP_TIMEOUT", 0.2)
    _STORED.clear()
    await app.shutdown()
    assert _STORED == ["stored"] and app.db.closed
    [warning] = [record for record in caplog.records
                 if record.getMessage() == "a_hangs | vachat_shutdown did not finish in time; going on"]
    assert "_hangs_at_shutdown" in warning.awaiting[0]
