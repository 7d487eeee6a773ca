"""Logging a request never stalls the server, however long its fields: the redaction patterns
are linear and logged fields are cut to ``MAX_LOGGED_TEXT``.

Each request below is shaped against one pattern the server used to have, each of which took
tens of seconds of IOLoop time on 60,000 characters. Liveness is measured from outside, by
``/health/live`` requests made while the long one is served and right after it answered.
"""

import asyncio
import json
import time

import pytest
import tornado.httpclient

from vachat.logs import MAX_LOGGED_TEXT, TRUNCATED_MARK

LONG = 60_000
# A loose bound: the server answered after 46.8 s before the patterns were linear.
LIVENESS_BOUND = 1.0


def _long(unit: str) -> str:
    return (unit * (LONG // len(unit) + 1))[:LONG]


LONG_REQUESTS = {
    # a run of word characters: [\w-]*password[\w-]* rescanned it from each character
    "path": dict(path="/api/" + _long("7")),
    # runs that look like the start of a JWT, and of an API key, from every dash
    "query": dict(path="/api/openapi.json?q=" + _long("eyJ-vak_-")),
    # credentials full of URL user-info starts ("://a:" each, no "@" anywhere)
    "header value": dict(path="/api/auth/me", headers={"Authorization": "Bearer " + _long("://a:")}),
    # a JSON string of unterminated quoted "password" values
    "JSON string": dict(path="/api/auth/login", method="POST",
                        body=json.dumps({"email": _long('password="x '), "password": "x"}),
                        headers={"Content-Type": "application/json"}),
}


async def _probe_liveness(base_url: str, served: asyncio.Future) -> list[float]:
    """``/health/live`` again and again until ``served`` is done, then once more: how long each took."""
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    latencies = []
    try:
        while True:
            last = served.done()
            started = time.monotonic()
            response = await client.fetch(base_url + "/health/live", request_timeout=120)
            latencies.append(time.monotonic() - started)
            assert response.code == 200
            if last:
                return latencies
    finally:
        client.close()


@pytest.mark.gen_test(timeout=120)
@pytest.mark.parametrize("field", list(LONG_REQUESTS))
async def test_a_long_field_never_stalls_the_server(server_process, field):
    server = server_process()
    await server.wait_ready()
    request = LONG_REQUESTS[field]
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        served = asyncio.ensure_future(client.fetch(
            server.base_url + request["path"], method=request.get("method", "GET"), body=request.get("body"),
            headers=request.get("headers"), raise_error=False, request_timeout=120))
        latencies = await _probe_liveness(server.base_url, served)
        response = await served
    finally:
        client.close()
    assert response.code < 500, response.body
    print(f"{field}: {len(latencies)} liveness probes, slowest {max(latencies) * 1000:.0f} ms")
    assert max(latencies) < LIVENESS_BOUND


@pytest.mark.gen_test(timeout=60)
async def test_a_long_path_is_logged_cut_to_the_limit(server_process):
    server = server_process()
    await server.wait_ready()
    response = await server.fetch("/api/" + _long("7"))
    assert response.code == 404
    server.terminate()
    assert await server.wait_exit() == 0
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "vachat.access" and line.get("status") == 404]
    assert access, server.output()
    assert access[0]["path"] == "/api/" + "7" * (MAX_LOGGED_TEXT - len("/api/")) + TRUNCATED_MARK
