"""RBAC through the real server: ``requires`` on REST methods and WebSocket events (stacked
either way round), ``*``, plugin-declared permissions, default roles, role edits taking effect."""

import types

import pytest

from vachat.accounts.models import Role
from vachat.plugin_api import requires
from vachat.accounts.sessions import invalidate_role
from vachat.plugin_api import ApiHandler, endpoint, hookimpl, ws_event
from vachat.testing import assert_error


def _rbac_plugin():
    module = types.ModuleType("rbacdemo")

    class Reports(ApiHandler):
        @endpoint("Read reports")
        @requires("rbacdemo.read")
        async def get(self):
            self.respond({"by": self.actor.id})

        @requires("rbacdemo.write")  # outside the declaration: recorded in it too
        @endpoint("Write a report")
        async def post(self):
            self.respond({"written": True}, status=201)

        @endpoint("Purge reports")
        @requires("rbacdemo.read", "rbacdemo.write")
        async def delete(self):
            self.respond(None)

    @ws_event("rbacdemo-inner")
    @requires("rbacdemo.write")
    async def inner(ctx, data):
        return {"ok": "inner"}

    @requires("rbacdemo.write")
    @ws_event("rbacdemo-outer")
    async def outer(ctx, data):
        return {"ok": "outer"}

    @hookimpl
    def vachat_routes(app):
        return [(r"/api/rbacdemo/reports", Reports)]

    @hookimpl
    def vachat_ws_events(app):
        return [inner, outer]

    @hookimpl
    def vachat_permissions():
        return [("rbacdemo.read", "Read reports"), ("rbacdemo.write", "Write reports")]

    module.vachat_routes, module.vachat_ws_events, module.vachat_permissions = vachat_routes, vachat_ws_events, vachat_permissions
    module.Reports = Reports
    return module


RBAC = _rbac_plugin()
pytestmark = pytest.mark.vachat(plugins=[("rbacdemo", RBAC)])


@pytest.mark.gen_test
async def test_default_roles_exist_on_a_fresh_server(app):
    roles = {role.name: role for role in await app.db.run(lambda: list(Role.select()))}
    assert roles["admin"].permissions == ["*"] and roles["admin"].is_system
    assert roles["user"].permissions == [] and roles["user"].is_system


@pytest.mark.gen_test
async def test_plugin_permissions_are_declared(app):
    assert app.permissions["rbacdemo.read"] == "Read reports"
    assert "users.read" in app.permissions  # the core's own


@pytest.mark.gen_test
async def test_rest_permissions(fetch, make_user, admin_user):
    plain = await make_user()
    reader = await make_user(role="reader", permissions=["rbacdemo.read"])
    writer = await make_user(role="writer", permissions=["rbacdemo.read", "rbacdemo.write"])

    assert_error(await fetch("/api/rbacdemo/reports"), 401, "UNAUTHORIZED")
    assert_error(await fetch("/api/rbacdemo/reports", method="POST", json={}), 401, "UNAUTHORIZED")
    body = assert_error(await fetch("/api/rbacdemo/reports", user=plain), 403, "FORBIDDEN")
    assert "rbacdemo.read" in body["error"]
    assert (await fetch("/api/rbacdemo/reports", user=reader)).data == {"by": reader.id}
    assert_error(await fetch("/api/rbacdemo/reports", method="POST", json={}, user=reader), 403, "FORBIDDEN")
    assert_error(await fetch("/api/rbacdemo/reports", method="DELETE", user=reader), 403, "FORBIDDEN")
    assert (await fetch("/api/rbacdemo/reports", method="POST", json={}, user=writer)).code == 201
    assert (await fetch("/api/rbacdemo/reports", method="DELETE", user=writer)).code == 200
    # '*' grants everything, including permissions declared after the role was made.
    for method in ("GET", "POST", "DELETE"):
        response = await fetch("/api/rbacdemo/reports", method=method, json={} if method == "POST" else None,
                               user=admin_user)
        assert response.code in (200, 201), response.body


def test_outer_requires_is_recorded_in_the_declaration():
    assert RBAC.Reports.post.endpoint.permission == "rbacdemo.write"
    assert RBAC.Reports.post.endpoint.auth is True


@pytest.mark.gen_test
async def test_openapi_shows_the_permission(fetch):
    document = (await fetch("/api/openapi.json")).json
    operation = document["paths"]["/api/rbacdemo/reports"]["post"]
    assert "403" in operation["responses"]


@pytest.mark.gen_test
async def test_websocket_event_permissions(make_user, ws_connect, admin_user):
    reader = await make_user(role="reader", permissions=["rbacdemo.read"])
    socket = await ws_connect(user=reader)
    await socket.receive("ready")
    for event in ("rbacdemo-inner", "rbacdemo-outer"):
        reply = await socket.request(event, {})
        assert reply["type"] == "error" and reply["data"]["code"] == "FORBIDDEN", reply
    assert (await socket.request("ping"))["type"] == "pong"  # still open

    admin_socket = await ws_connect(user=admin_user)
    await admin_socket.receive("ready")
    assert (await admin_socket.request("rbacdemo-inner", {}))["data"] == {"ok": "inner"}
    assert (await admin_socket.request("rbacdemo-outer", {}))["data"] == {"ok": "outer"}


@pytest.mark.gen_test
async def test_role_edits_take_effect_on_the_next_request(app, fetch, make_user):
    reader = await make_user(role="reader", permissions=["rbacdemo.read"])
    assert_error(await fetch("/api/rbacdemo/reports", method="POST", json={}, user=reader), 403, "FORBIDDEN")
    await app.db.run(lambda: Role.update(permissions=["rbacdemo.read", "rbacdemo.write"])
                     .where(Role.name == "reader").execute())
    await invalidate_role(app, "reader")
    assert (await fetch("/api/rbacdemo/reports", method="POST", json={}, user=reader)).code == 201
    me = await fetch("/api/auth/me", user=reader)
    assert me.data["permissions"] == ["rbacdemo.read", "rbacdemo.write"]


def test_requires_needs_a_permission():
    with pytest.raises(ValueError):
        requires()


@pytest.mark.gen_test
async def test_a_role_change_reaches_open_sockets(app, make_user, ws_connect):
    from vachat.accounts.models import Role, User

    user = await make_user(role="reporter", permissions=[])
    socket = await ws_connect(user=user)
    await socket.receive("ready")
    refused = await socket.request("rbacdemo-inner", {})
    assert refused["type"] == "error" and refused["data"]["code"] == "FORBIDDEN"

    await app.db.run(lambda: Role.update(permissions=["rbacdemo.write"]).where(Role.name == "reporter").execute())
    await app.accounts.invalidate_role("reporter")
    assert (await socket.request("rbacdemo-inner", {}))["type"] == "ack"

    await make_user(role="viewer", permissions=[])
    await app.db.run(lambda: User.update(role="viewer").where(User.id == user.id).execute())
    await app.accounts.invalidate_user(user.id)
    again = await socket.request("rbacdemo-inner", {})
    assert again["type"] == "error" and again["data"]["code"] == "FORBIDDEN"

    await app.db.run(lambda: User.update(is_active=False).where(User.id == user.id).execute())
    await app.accounts.invalidate_user(user.id)
    code, _ = await socket.closed()
    assert code == 4401
