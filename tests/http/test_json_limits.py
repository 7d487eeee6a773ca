"""Deep JSON and development tracebacks (issue #7, item 6), through the real server.

JSON nested more than ``MAX_JSON_DEPTH`` (32) levels, in a body or a frame, is a 400 /
an error frame; a traceback is shown only in development to a client on this machine; and
``details`` is always the list of failing fields.
"""

import json
import socket

import pytest
import tornado.httpclient
import tornado.netutil
from tornado.httpserver import HTTPServer

from tests.plugins import sample
from vachat.testing import assert_error
from vachat.wire import MAX_JSON_DEPTH


def nested(levels: int, leaf: object = 1) -> object:
    value = leaf
    for level in range(levels):
        value = {"k": value} if level % 2 else [value]
    return value


def nested_text(levels: int) -> str:
    """``levels`` nested objects as text, built without recursion (json.dumps of it would fail)."""
    return '{"a":' * levels + "1" + "}" * levels


@pytest.mark.gen_test
async def test_profile_preferences_974_levels_deep_are_a_400_not_a_500(fetch, make_user):
    user = await make_user()
    body = '{"preferences":' + nested_text(974) + "}"
    response = await fetch("/api/users/profile", method="PUT", body=body,
                           headers={"Content-Type": "application/json", **user.auth_headers})
    error = assert_error(response, 400, "VALIDATION_FAILED")
    assert error["details"] == [{"field": "(body)",
                                 "message": f"must not nest objects and arrays more than {MAX_JSON_DEPTH} levels deep"}]
    # Nesting deep enough to exhaust the parser's own stack is the same clean 400.
    deeper = await fetch("/api/users/profile", method="PUT", body='{"preferences":' + nested_text(100_000) + "}",
                         headers={"Content-Type": "application/json", **user.auth_headers})
    assert_error(deeper, 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
async def test_nesting_up_to_the_limit_is_accepted_and_stored(fetch, make_user):
    user = await make_user()
    preferences = {"theme": nested(MAX_JSON_DEPTH - 2)}  # the body's object and preferences: 2 more
    response = await fetch("/api/users/profile", method="PUT", json={"preferences": preferences}, user=user)
    assert response.code == 200, response.body
    profile = await fetch("/api/users/profile", user=user)
    assert profile.data["preferences"]["theme"] == preferences["theme"]

    too_deep = {"theme": nested(MAX_JSON_DEPTH - 1)}
    assert_error(await fetch("/api/users/profile", method="PUT", json={"preferences": too_deep}, user=user),
                 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=[("sample", sample)])
async def test_a_deep_frame_gets_an_error_frame_and_the_socket_lives_on(ws_connect):
    socket_ = await ws_connect(user="alice")
    await socket_.receive("ready")
    socket_.send_raw(json.dumps({"type": "sample-echo", "id": "deep", "data": nested(MAX_JSON_DEPTH + 5)}))
    reply = await socket_.receive(id="deep")
    assert reply["type"] == "error" and reply["data"]["code"] == "VALIDATION_FAILED"
    assert reply["data"]["details"][0]["field"] == "(frame)"
    assert (await socket_.request("ping"))["type"] == "pong"


# -- tracebacks --------------------------------------------------------------------------

development = pytest.mark.vachat(config={"env": "development"}, plugins=[("sample", sample)])


@pytest.mark.gen_test
@development
async def test_a_traceback_goes_to_a_loopback_client_beside_the_details_list(fetch):
    body = assert_error(await fetch("/api/sample/faults/crash"), 500, "INTERNAL")
    assert "RuntimeError" in "".join(body["traceback"])
    assert "details" not in body


@pytest.mark.gen_test
@development
@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Real-IP", "Forwarded"])
async def test_no_traceback_through_a_proxy_even_on_loopback(fetch, header):
    value = "for=198.51.100.1" if header == "Forwarded" else "198.51.100.1"
    body = assert_error(await fetch("/api/sample/faults/crash", headers={header: value}), 500, "INTERNAL")
    assert "traceback" not in body and "details" not in body


def outward_address() -> str | None:
    """This machine's address on a non-loopback interface, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.mark.gen_test
@development
async def test_no_traceback_for_a_client_that_is_not_on_loopback(app):
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    sockets = tornado.netutil.bind_sockets(0, address)
    server = HTTPServer(app)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        response = await client.fetch(f"http://{address}:{port}/api/sample/faults/crash", raise_error=False)
    finally:
        client.close()
        server.stop()
    assert response.code == 500
    body = json.loads(response.body)
    assert body["code"] == "INTERNAL" and "traceback" not in body and "details" not in body
