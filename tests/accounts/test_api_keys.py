"""API keys through the real server: created once, stored hashed, listed without the secret,
usable as X-API-Key on REST and WebSocket, revocable with immediate effect, audited."""

import datetime
import hashlib

import pytest

from vachat.accounts.models import ApiKey, AuditLog
from vachat.accounts.sessions import invalidate_user
from vachat.testing import assert_error


async def create_key(fetch, user, **body):
    response = await fetch("/api/auth/api-keys", method="POST", json={"name": "ci bot", **body}, user=user)
    assert response.code == 201, response.body
    return response.data


@pytest.mark.gen_test
async def test_create_list_and_use_a_key(app, fetch, make_user):
    user = await make_user()
    created = await create_key(fetch, user)
    key = created["key"]
    assert key.startswith("vak_") and len(key) >= 40
    assert created["prefix"] == key[:12] and created["name"] == "ci bot" and created["expiresAt"] is None

    row = await app.db.run(ApiKey.get_by_id, created["id"])
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in repr(row.__data__)

    listing = await fetch("/api/auth/api-keys", user=user)
    assert listing.code == 200
    [listed] = listing.data
    assert listed["id"] == created["id"] and listed["prefix"] == created["prefix"]
    assert "key" not in listed and key not in listing.body.decode()

    me = await fetch("/api/auth/me", headers={"X-API-Key": key})
    assert me.code == 200 and me.data["id"] == user.id
    assert me.data["apiKeyId"] == created["id"] and me.data["sessionId"] is None
    used = await app.db.run(ApiKey.get_by_id, created["id"])
    assert used.last_used_at is not None
    # "Bearer vak_…" is accepted too (it is how a socket's auth frame carries a key).
    assert (await fetch("/api/auth/me", headers={"Authorization": f"Bearer {key}"})).code == 200

    [audit] = await app.db.run(lambda: list(AuditLog.select().where(AuditLog.action == "auth.api_key_created")))
    assert audit.user_id == user.id and audit.details["apiKeyId"] == created["id"]
    assert key not in str(audit.details)


@pytest.mark.gen_test
async def test_key_on_the_websocket(make_user, fetch, ws_connect):
    user = await make_user()
    created = await create_key(fetch, user)
    socket = await ws_connect(headers={"X-API-Key": created["key"]})
    ready = await socket.receive("ready")
    assert ready["data"] == {"userId": user.id, "sessionId": f"apikey:{created['id']}", "protocol": 1}
    late = await ws_connect()
    reply = await late.request("auth", {"token": created["key"]})
    assert reply["type"] == "ack" and reply["data"]["userId"] == user.id


@pytest.mark.gen_test
async def test_revoked_key_is_refused_at_once_and_its_sockets_close(app, fetch, make_user, ws_connect):
    user = await make_user()
    created = await create_key(fetch, user)
    key = created["key"]
    assert (await fetch("/api/auth/me", headers={"X-API-Key": key})).code == 200  # now cached
    socket = await ws_connect(headers={"X-API-Key": key})
    await socket.receive("ready")
    session_socket = await ws_connect(user=user)
    await session_socket.receive("ready")

    response = await fetch(f"/api/auth/api-keys/{created['id']}", method="DELETE", user=user)
    assert response.code == 200, response.body
    assert (await socket.closed())[0] == 4401
    assert_error(await fetch("/api/auth/me", headers={"X-API-Key": key}), 401, "UNAUTHORIZED")
    refused = await ws_connect(headers={"X-API-Key": key})
    assert (await refused.closed())[0] == 4401
    assert (await fetch("/api/auth/api-keys", user=user)).data == []
    assert (await session_socket.request("ping"))["type"] == "pong"  # the user's session socket stays
    assert_error(await fetch(f"/api/auth/api-keys/{created['id']}", method="DELETE", user=user), 404, "NOT_FOUND")
    [audit] = await app.db.run(lambda: list(AuditLog.select().where(AuditLog.action == "auth.api_key_deleted")))
    assert audit.user_id == user.id and audit.details["apiKeyId"] == created["id"]


@pytest.mark.gen_test
async def test_another_users_key_is_not_found(fetch, make_user):
    alice, mallory = await make_user(), await make_user()
    created = await create_key(fetch, alice)
    assert_error(await fetch(f"/api/auth/api-keys/{created['id']}", method="DELETE", user=mallory), 404, "NOT_FOUND")
    assert (await fetch("/api/auth/me", headers={"X-API-Key": created["key"]})).code == 200
    assert (await fetch("/api/auth/api-keys", user=mallory)).data == []


@pytest.mark.gen_test
async def test_a_key_cannot_manage_keys_or_sessions(fetch, make_user):
    user = await make_user()
    created = await create_key(fetch, user)
    headers = {"X-API-Key": created["key"]}
    assert_error(await fetch("/api/auth/api-keys", method="POST", json={"name": "more"}, headers=headers),
                 403, "FORBIDDEN")
    assert_error(await fetch(f"/api/auth/api-keys/{created['id']}", method="DELETE", headers=headers),
                 403, "FORBIDDEN")
    assert_error(await fetch("/api/auth/logout", method="POST", headers=headers), 403, "FORBIDDEN")
    assert_error(await fetch(f"/api/auth/sessions/{user.session_id}", method="DELETE", headers=headers),
                 403, "FORBIDDEN")
    assert (await fetch("/api/auth/api-keys", headers=headers)).code == 200  # reading is fine


@pytest.mark.gen_test
async def test_expiry(app, fetch, make_user):
    user = await make_user()
    in_a_week = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=7)).isoformat()
    dated = await create_key(fetch, user, expiresAt=in_a_week)
    assert dated["expiresAt"].startswith(in_a_week[:16]) and dated["expired"] is False
    relative = await create_key(fetch, user, expiresInDays=30)
    assert relative["expiresAt"] is not None

    past = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)).isoformat()
    body = assert_error(await fetch("/api/auth/api-keys", method="POST", json={"name": "x", "expiresAt": past},
                                    user=user), 400, "VALIDATION_FAILED")
    assert body["details"][0]["field"] == "expiresAt"
    assert_error(await fetch("/api/auth/api-keys", method="POST", json={"name": "x", "expiresAt": "tomorrow"},
                             user=user), 400, "VALIDATION_FAILED")
    assert_error(await fetch("/api/auth/api-keys", method="POST",
                             json={"name": "x", "expiresAt": in_a_week, "expiresInDays": 3}, user=user),
                 400, "VALIDATION_FAILED")

    # A key whose time is up stops working.
    assert (await fetch("/api/auth/me", headers={"X-API-Key": dated["key"]})).code == 200
    await app.db.run(lambda: ApiKey.update(expires_at=datetime.datetime(2000, 1, 1))
                     .where(ApiKey.id == dated["id"]).execute())
    await invalidate_user(app, user.id)  # what any code changing a key's row behind our back must do
    assert_error(await fetch("/api/auth/me", headers={"X-API-Key": dated["key"]}), 401, "UNAUTHORIZED")
    listed = {item["id"]: item for item in (await fetch("/api/auth/api-keys", user=user)).data}
    assert listed[dated["id"]]["expired"] is True


@pytest.mark.gen_test
async def test_bad_keys_and_bodies(fetch, make_user):
    user = await make_user()
    for key in ["vak_nonsense", "vak_" + "A" * 43, "vak_" + "x" * 500]:
        assert_error(await fetch("/api/auth/me", headers={"X-API-Key": key}), 401, "UNAUTHORIZED")
    assert_error(await fetch("/api/auth/me", headers={"X-API-Key": "not-ours"}), 401, "UNAUTHORIZED")
    assert_error(await fetch("/api/auth/api-keys", method="POST", json={}, user=user), 400, "VALIDATION_FAILED")
    assert_error(await fetch("/api/auth/api-keys", method="POST", json={"name": "   "}, user=user),
                 400, "VALIDATION_FAILED")
    assert_error(await fetch("/api/auth/api-keys", method="POST", json={"name": "x", "scopes": ["*"]}, user=user),
                 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
async def test_expiry_must_be_an_rfc3339_date_time(fetch, make_user):
    user = await make_user()
    for value in ("2099-01-01", "next tuesday", "2099-13-01T00:00:00Z"):
        body = assert_error(await fetch("/api/auth/api-keys", method="POST", user=user,
                                        json={"name": "ci", "expiresAt": value}), 400, "VALIDATION_FAILED")
        assert body["details"][0]["field"] == "expiresAt"
