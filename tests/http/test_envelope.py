"""The REST contract of SPEC §3 through the real server: envelope, codes, request ids,
headers, and a clean 4xx for every class of bad request."""

import json
import logging
import socket

import pytest

from tests.plugins import sample
from vachat.testing import assert_error

pytestmark = pytest.mark.vachat(plugins=[("sample", sample)])


@pytest.mark.gen_test
async def test_success_envelope_and_request_id(fetch):
    response = await fetch("/api/sample/widgets", method="POST", json={"name": "a", "size": 3}, user="alice")
    assert response.code == 201
    assert response.json == {"success": True, "data": {"widget": {"name": "a", "size": 3}, "by": "alice"}}
    assert len(response.headers["X-Request-ID"]) >= 16


@pytest.mark.gen_test
async def test_request_id_is_echoed_when_safe_and_replaced_when_not(fetch):
    echoed = await fetch("/api/sample/widgets/known", headers={"X-Request-ID": "trace-123.abc"})
    assert echoed.headers["X-Request-ID"] == "trace-123.abc"
    replaced = await fetch("/api/sample/widgets/known", headers={"X-Request-ID": "bad id\twith spaces"})
    assert replaced.headers["X-Request-ID"] != "bad id\twith spaces"
    failed = await fetch("/api/nowhere", headers={"X-Request-ID": "err-1"})
    assert failed.headers["X-Request-ID"] == "err-1"  # errors carry it too


@pytest.mark.gen_test
async def test_unknown_route_and_method(fetch):
    assert_error(await fetch("/api/does-not-exist"), 404, "NOT_FOUND")
    assert_error(await fetch("/api/sample/widgets/known", method="PATCH", json={}), 405, "METHOD_NOT_ALLOWED")
    assert_error(await fetch("/api/sample/widgets/other"), 404, "NOT_FOUND")


@pytest.mark.gen_test
async def test_malformed_json(fetch):
    body = assert_error(await fetch("/api/sample/widgets", method="POST", body='{"name": "a", ',
                                    headers={"Content-Type": "application/json"}, user="alice"),
                        400, "VALIDATION_FAILED")
    assert body["details"][0]["field"] == "(body)"


@pytest.mark.gen_test
async def test_empty_body(fetch):
    assert_error(await fetch("/api/sample/widgets", method="POST", body="",
                             headers={"Content-Type": "application/json"}, user="alice"), 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
async def test_wrong_content_type(fetch):
    assert_error(await fetch("/api/sample/widgets", method="POST", body="name=a&size=3",
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, user="alice"),
                 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_error(await fetch("/api/sample/widgets", method="POST", body='{"name":"a","size":3}', user="alice"),
                 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.gen_test
async def test_unknown_missing_and_mistyped_fields_are_named(fetch):
    body = assert_error(await fetch("/api/sample/widgets", method="POST", user="alice",
                                    json={"size": "big", "colour": "red"}), 400, "VALIDATION_FAILED")
    fields = {detail["field"]: detail["message"] for detail in body["details"]}
    assert fields["colour"] == "is not an allowed field"
    assert fields["name"] == "is required"
    assert fields["size"] == "must be a whole number"


@pytest.mark.gen_test
async def test_json_that_is_not_an_object(fetch):
    assert_error(await fetch("/api/sample/widgets", method="POST", json=[1, 2], user="alice"), 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
@pytest.mark.vachat(config={"max_json_body": 1024})
async def test_oversize_body_with_length(fetch):
    body = {"name": "a", "size": 3, "tags": ["x" * 2000]}
    assert_error(await fetch("/api/sample/widgets", method="POST", json=body, user="alice"), 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.gen_test
@pytest.mark.vachat(config={"max_json_body": 1024})
async def test_oversize_chunked_body(http_server, http_port):
    # No Content-Length: the limit must hold while the body streams in.
    payload = json.dumps({"name": "a", "size": 3, "tags": ["x" * 4000]}).encode()
    request = (b"POST /api/sample/widgets HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer test:alice\r\n"
               b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % len(payload) + payload + b"\r\n0\r\n\r\n")
    import tornado.iostream

    stream = tornado.iostream.IOStream(socket.socket())
    await stream.connect(("127.0.0.1", http_port))
    await stream.write(request)
    head = await stream.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    stream.close()


@pytest.mark.gen_test
async def test_authentication_and_permissions(fetch):
    assert_error(await fetch("/api/sample/widgets", method="POST", json={"name": "a", "size": 1}), 401, "UNAUTHORIZED")
    assert_error(await fetch("/api/sample/widgets", method="POST", json={"name": "a", "size": 1},
                             headers={"Authorization": "Bearer test:invalid"}), 401, "UNAUTHORIZED")
    assert_error(await fetch("/api/sample/widgets/known", method="DELETE", user="alice"), 403, "FORBIDDEN")
    allowed = await fetch("/api/sample/widgets/known", method="DELETE",
                          headers={"Authorization": "Bearer test:alice", "X-Test-Permissions": "sample.delete"})
    assert allowed.code == 200 and allowed.json["message"] == "deleted"


@pytest.mark.gen_test
async def test_conflict_from_integrity_error(fetch):
    assert_error(await fetch("/api/sample/faults/conflict"), 409, "CONFLICT")


@pytest.mark.gen_test
async def test_unexpected_error_is_a_500_without_traceback(fetch, caplog):
    with caplog.at_level(logging.ERROR):
        body = assert_error(await fetch("/api/sample/faults/crash"), 500, "INTERNAL")
    assert "details" not in body and "boom" not in body["error"]
    # The redacting filter renders the traceback into exc_text; either form carries it.
    assert any("boom" in (record.exc_text or "") or record.exc_info for record in caplog.records)


@pytest.mark.gen_test
@pytest.mark.vachat(config={"env": "development"})
async def test_development_shows_the_traceback(fetch):
    body = assert_error(await fetch("/api/sample/faults/crash"), 500, "INTERNAL")
    assert "RuntimeError" in "".join(body["traceback"]) and "details" not in body


@pytest.mark.gen_test
async def test_query_parameters_are_converted_and_validated(fetch):
    response = await fetch("/api/sample/widgets?page=2&archived=true&tag=a,b&sortBy=name&utm=x")
    assert response.code == 200
    assert response.json["data"]["query"] == {"page": 2, "limit": 20, "archived": True, "tag": ["a", "b"],
                                               "sortBy": "name", "sortOrder": "desc"}
    for bad in ("page=abc", "limit=1000", "sortBy=password", "archived=maybe", "page=0"):
        body = assert_error(await fetch(f"/api/sample/widgets?{bad}"), 400, "VALIDATION_FAILED")
        assert body["details"][0]["field"] == bad.split("=")[0]


@pytest.mark.gen_test
@pytest.mark.vachat(config={"rate_limit_global": "3/60s"})
async def test_global_rate_limit(fetch):
    for _ in range(3):
        assert (await fetch("/api/sample/widgets/known")).code == 200
    response = await fetch("/api/sample/widgets/known")
    assert_error(response, 429, "RATE_LIMITED")
    assert int(response.headers["Retry-After"]) >= 1
    assert (await fetch("/health/live")).code == 200  # probes are never limited


@pytest.mark.gen_test
async def test_security_headers(fetch):
    response = await fetch("/api/sample/widgets/known")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP
    https = await fetch("/api/sample/widgets/known", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in https.headers  # not from an untrusted peer


@pytest.mark.gen_test
@pytest.mark.vachat(config={"trusted_proxies": "127.0.0.1/32"})
async def test_hsts_behind_a_trusted_tls_proxy(fetch):
    response = await fetch("/api/sample/widgets/known", headers={"X-Forwarded-Proto": "https"})
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.gen_test
@pytest.mark.vachat(config={"cors_origins": "https://app.example"})
async def test_cors_from_config(fetch):
    preflight = await fetch("/api/sample/widgets", method="OPTIONS", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert preflight.code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    refused = await fetch("/api/sample/widgets/known", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in refused.headers


@pytest.mark.gen_test
async def test_nan_and_infinity_are_not_json(fetch):
    for text in ('{"name": "a", "size": NaN}', '{"name": "a", "size": Infinity}'):
        assert_error(await fetch("/api/sample/widgets", method="POST", body=text, user="alice",
                                 headers={"Content-Type": "application/json"}), 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
async def test_query_parameters_inherited_through_allof(fetch):
    response = await fetch("/api/sample/widgets?search=lamp&limit=5")
    assert response.json["data"]["query"]["search"] == "lamp"
    assert response.json["data"]["query"]["limit"] == 5


@pytest.mark.gen_test
async def test_large_bodies_are_validated_off_the_loop_with_the_same_answers(fetch):
    padding = "x" * 100_000  # above VALIDATE_ON_LOOP_BYTES
    created = await fetch("/api/sample/widgets", method="POST", user="alice",
                          json={"name": "a", "size": 3, "tags": [padding]})
    assert created.code == 201 and created.json["data"]["widget"]["tags"] == [padding]
    body = assert_error(await fetch("/api/sample/widgets", method="POST", user="alice",
                                    json={"name": "a", "size": "big", "tags": [padding]}), 400, "VALIDATION_FAILED")
    assert body["details"][0]["field"] == "size"
    assert_error(await fetch("/api/sample/widgets", method="POST", user="alice", headers={"Content-Type": "application/json"},
                             body='{"name": "a", "tags": ["' + padding + '"'), 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
@pytest.mark.vachat(config={"max_json_body": 2048, "http_idle_timeout": 7})
async def test_in_process_tests_run_behind_the_production_connection_settings(production_http_server, fetch):
    assert production_http_server.conn_params.max_body_size == 2048
    assert production_http_server.conn_params.header_timeout == 7
    response = await fetch("/api/auth/login", method="POST", body=b"x" * 4096,
                           headers={"Content-Type": "application/json"})
    assert response.code == 413
