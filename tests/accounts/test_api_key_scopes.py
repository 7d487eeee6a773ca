"""API keys with a subset of their owner's permissions and an expiry, through the real server:
asking for more than the owner holds is 400 on ``permissions``; a key acts with what it was
given that its owner still holds (it shrinks and grows back with the owner's role, never past
what it was given); an expired key is refused like a revoked one."""

from __future__ import annotations

import datetime

import pytest

from vachat.testing import assert_error, error_fields, eventually

ADMIN = pytest.mark.vachat(plugins=["admin"])


async def _key(fetch, user, expect: int = 201, **fields) -> dict:
    response = await fetch("/api/auth/api-keys", method="POST", user=user, json={"name": "script", **fields})
    assert response.code == expect, response.body
    return response.json


def _with(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def _codes(fetch, key: str) -> tuple[int, int]:
    """(GET /api/admin/users, GET /api/admin/audit-logs) with ``key``: users.read, audit.read."""
    users = await fetch("/api/admin/users", headers=_with(key))
    audit = await fetch("/api/admin/audit-logs", headers=_with(key))
    return users.code, audit.code


@ADMIN
@pytest.mark.gen_test
async def test_a_key_gets_a_subset_and_shrinks_with_its_owner(fetch, make_user, admin_user):
    owner = await make_user(role="ops", permissions=["users.read", "audit.read"])
    scoped = (await _key(fetch, owner, permissions=["users.read"]))["data"]
    everything = (await _key(fetch, owner))["data"]
    assert scoped["permissions"] == ["users.read"] and everything["permissions"] is None
    listed = {key["id"]: key for key in (await fetch("/api/auth/api-keys", user=owner)).data}
    assert listed[scoped["id"]]["permissions"] == ["users.read"] and listed[everything["id"]]["permissions"] is None
    assert "key" not in listed[scoped["id"]]

    assert await _codes(fetch, scoped["key"]) == (200, 403)
    assert await _codes(fetch, everything["key"]) == (200, 200)
    assert (await fetch("/api/auth/me", headers=_with(scoped["key"]))).data["permissions"] == ["users.read"]

    roles = (await fetch("/api/admin/roles", user=admin_user)).data
    ops = next(role["id"] for role in roles if role["name"] == "ops")
    assert (await fetch(f"/api/admin/roles/{ops}", method="PUT", user=admin_user,
                        json={"permissions": ["audit.read"]})).code == 200
    assert await _codes(fetch, scoped["key"]) == (403, 403)  # what it had, the owner lost
    assert await _codes(fetch, everything["key"]) == (403, 200)
    assert (await fetch(f"/api/admin/roles/{ops}", method="PUT", user=admin_user,
                        json={"permissions": ["users.read", "audit.read", "users.update"]})).code == 200
    assert await _codes(fetch, scoped["key"]) == (200, 403)  # back, and never past what it was given


@ADMIN
@pytest.mark.gen_test
async def test_a_key_cannot_ask_for_what_its_owner_lacks(fetch, make_user, admin_user):
    owner = await make_user(role="ops", permissions=["users.read"])
    for wanted in (["users.delete"], ["*"], ["users.read", "audit.read"], ["no.such_permission"]):
        error = assert_error(await fetch("/api/auth/api-keys", method="POST", user=owner,
                                         json={"name": "x", "permissions": wanted}), 400, "VALIDATION_FAILED")
        assert "permissions" in error_fields(error), (wanted, error)
    assert (await fetch("/api/auth/api-keys", user=owner)).data == []
    # A holder of * may give a key * or anything declared.
    assert (await _key(fetch, admin_user, permissions=["*"]))["data"]["permissions"] == ["*"]
    assert (await _key(fetch, admin_user, permissions=["users.read"]))["data"]["permissions"] == ["users.read"]
    assert (await _key(fetch, owner, permissions=[]))["data"]["permissions"] == []


@ADMIN
@pytest.mark.gen_test
async def test_a_scoped_administrators_key_administers_only_within_its_scope(fetch, make_user, admin_user):
    target = await make_user()
    key = (await _key(fetch, admin_user, permissions=["users.read", "users.update"]))["data"]["key"]
    # users.update, but not every permission of the admin role: it cannot give that role.
    assert_error(await fetch(f"/api/admin/users/{target.id}", method="PUT", headers=_with(key),
                             json={"role": "admin"}), 403, "FORBIDDEN")
    assert (await fetch(f"/api/admin/users/{target.id}", method="PUT", headers=_with(key),
                        json={"tier": "pro"})).data["tier"] == "pro"
    assert_error(await fetch("/api/admin/roles", headers=_with(key)), 403, "FORBIDDEN")


@pytest.mark.gen_test
async def test_an_expired_key_is_refused_like_a_revoked_one(fetch, make_user):
    owner = await make_user()
    soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)).isoformat()
    expiring = (await _key(fetch, owner, expiresAt=soon))["data"]
    revoked = (await _key(fetch, owner))["data"]
    assert (await fetch("/api/auth/me", headers=_with(expiring["key"]))).code == 200
    assert (await fetch(f"/api/auth/api-keys/{revoked['id']}", method="DELETE", user=owner)).code == 200
    refused_revoked = assert_error(await fetch("/api/auth/me", headers=_with(revoked["key"])), 401, "UNAUTHORIZED")

    async def refused():
        response = await fetch("/api/auth/me", headers=_with(expiring["key"]))
        return response if response.code == 401 else None

    refused_expired = await eventually(refused, timeout=10, what="the key to expire")
    assert refused_expired.json == refused_revoked
    listed = {key["id"]: key for key in (await fetch("/api/auth/api-keys", user=owner)).data}
    assert listed[expiring["id"]]["expired"] is True

    past = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)).isoformat()
    error = assert_error(await fetch("/api/auth/api-keys", method="POST", user=owner,
                                     json={"name": "late", "expiresAt": past}), 400, "VALIDATION_FAILED")
    assert "expiresAt" in error_fields(error)


@pytest.mark.vachat(plugins=["chat", "admin"])
@pytest.mark.gen_test
async def test_a_scoped_keys_socket_keeps_its_scope_when_its_owners_role_changes(fetch, ws_connect, make_user,
                                                                                   admin_user):
    stranger = await make_user()
    private = (await fetch("/api/chat/conversations", method="POST", user=stranger, json={"title": "mine"})).data["id"]
    owner = await make_user(role="auditors", permissions=["conversations.read_all", "users.read"])
    key = (await _key(fetch, owner, permissions=["users.read"]))["data"]["key"]
    socket = await ws_connect(headers=_with(key))
    await socket.receive("ready")

    async def join_answer() -> tuple[str, str | None]:
        reply = await socket.request("join-conversation", {"conversationId": private})
        return reply["type"], reply["data"].get("code") if reply["type"] == "error" else None

    assert await join_answer() == ("error", "NOT_FOUND")  # the key was not given read_all
    roles = (await fetch("/api/admin/roles", user=admin_user)).data
    auditors = next(role["id"] for role in roles if role["name"] == "auditors")
    assert (await fetch(f"/api/admin/roles/{auditors}", method="PUT", user=admin_user,
                        json={"permissions": ["conversations.read_all", "users.read", "audit.read"]})).code == 200
    # The open socket's identity was refreshed with the owner's new role: still the key's share.
    assert await join_answer() == ("error", "NOT_FOUND")
    assert (await fetch(f"/api/chat/conversations/{private}", user=owner)).code == 200  # the owner reads it
