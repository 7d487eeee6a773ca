"""Admin roles, permissions and the audit-log query through the real server."""

from __future__ import annotations

import datetime

import pytest

from vachat.testing import assert_error, error_fields


def role_named(roles: list[dict], name: str) -> dict:
    return next(role for role in roles if role["name"] == name)


@pytest.mark.gen_test
async def test_permissions_lists_every_declared_one_with_its_description(fetch, admin_user):
    response = await fetch("/api/admin/permissions", user=admin_user)
    assert response.code == 200
    listed = {entry["name"]: entry["description"] for entry in response.data}
    assert {"*", "admin.dashboard", "users.read", "users.update", "users.delete", "roles.manage",
            "audit.read"} <= set(listed)
    assert all(description for description in listed.values())


@pytest.mark.gen_test
async def test_roles_are_created_listed_and_changed_with_declared_permissions_only(fetch, make_user, admin_user):
    created = await fetch("/api/admin/roles", method="POST", user=admin_user,
                          json={"name": "support", "description": "Help desk", "permissions": ["users.read", "audit.read"]})
    assert created.code == 201, created.body
    assert (created.data["name"], created.data["permissions"], created.data["userCount"]) == \
        ("support", ["audit.read", "users.read"], 0)
    await make_user(role="support")
    roles = (await fetch("/api/admin/roles", user=admin_user)).data
    assert role_named(roles, "support")["userCount"] == 1
    assert role_named(roles, "admin")["permissions"] == ["*"]

    assert_error(await fetch("/api/admin/roles", method="POST", user=admin_user, json={"name": "support"}),
                 409, "CONFLICT")
    unknown = assert_error(await fetch("/api/admin/roles", method="POST", user=admin_user,
                                       json={"name": "typo", "permissions": ["users.raed", "users.read"]}),
                           400, "VALIDATION_FAILED")
    assert "users.raed" in error_fields(unknown)["permissions"]
    for body, field in (({"name": "Has Spaces"}, "name"), ({}, "name"), ({"name": "x", "extra": 1}, "extra"),
                        ({"name": "dup", "permissions": ["users.read", "users.read"]}, "permissions")):
        error = assert_error(await fetch("/api/admin/roles", method="POST", user=admin_user, json=body),
                             400, "VALIDATION_FAILED")
        assert field in error_fields(error), (body, error)
    assert "typo" not in {role["name"] for role in (await fetch("/api/admin/roles", user=admin_user)).data}

    support_id = created.data["id"]
    changed = await fetch(f"/api/admin/roles/{support_id}", method="PUT", user=admin_user,
                          json={"permissions": ["users.read", "users.update"]})
    assert changed.code == 200 and changed.data["permissions"] == ["users.read", "users.update"]
    assert_error(await fetch(f"/api/admin/roles/{support_id}", method="PUT", user=admin_user,
                             json={"permissions": ["nope"]}), 400, "VALIDATION_FAILED")
    assert_error(await fetch(f"/api/admin/roles/{support_id}", method="PUT", user=admin_user, json={}),
                 400, "VALIDATION_FAILED")
    assert_error(await fetch("/api/admin/roles/01HZZZZZZZZZZZZZZZZZZZZZZZ", method="PUT", user=admin_user,
                             json={"description": "x"}), 404, "NOT_FOUND")

    actions = [entry["details"] for entry in (await fetch("/api/admin/audit-logs?action=role.updated",
                                                          user=admin_user)).data]
    assert actions == [{"role": "support", "from": ["audit.read", "users.read"], "to": ["users.read", "users.update"]}]
    [creation] = (await fetch("/api/admin/audit-logs?action=role.created", user=admin_user)).data
    assert creation["actorId"] == admin_user.id and creation["details"]["role"] == "support"


@pytest.mark.gen_test
async def test_a_role_change_takes_effect_on_the_next_request(fetch, make_user, admin_user):
    holder = await make_user(role="helpdesk", permissions=[])
    assert_error(await fetch("/api/admin/audit-logs", user=holder), 403, "FORBIDDEN")
    role = role_named((await fetch("/api/admin/roles", user=admin_user)).data, "helpdesk")
    assert (await fetch(f"/api/admin/roles/{role['id']}", method="PUT", user=admin_user,
                        json={"permissions": ["audit.read"]})).code == 200
    assert (await fetch("/api/admin/audit-logs", user=holder)).code == 200
    assert (await fetch(f"/api/admin/roles/{role['id']}", method="PUT", user=admin_user,
                        json={"permissions": []})).code == 200
    assert_error(await fetch("/api/admin/audit-logs", user=holder), 403, "FORBIDDEN")


@pytest.mark.gen_test
async def test_audit_logs_filter_by_user_action_and_time_and_paginate(app, fetch, make_user, admin_user):
    ada, bob = await make_user(), await make_user()
    started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    for tier in ("pro", "team", "free"):
        assert (await fetch(f"/api/admin/users/{ada.id}", method="PUT", json={"tier": tier}, user=admin_user)).code == 200
    assert (await fetch(f"/api/admin/users/{bob.id}", method="PUT", json={"tier": "pro"}, user=admin_user)).code == 200

    page = await fetch(f"/api/admin/audit-logs?userId={ada.id}&action=user.updated&limit=2", user=admin_user)
    assert page.code == 200
    assert page.json["pagination"] == {"page": 1, "limit": 2, "total": 3, "totalPages": 2}
    assert [e["details"]["changes"]["tier"]["to"] for e in page.data] == ["free", "team"]  # newest first
    second = await fetch(f"/api/admin/audit-logs?userId={ada.id}&action=user.updated&limit=2&page=2", user=admin_user)
    assert [e["details"]["changes"]["tier"]["to"] for e in second.data] == ["pro"]

    since = started.strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = await fetch(f"/api/admin/audit-logs?action=user.updated&from={since}", user=admin_user)
    assert recent.json["pagination"]["total"] == 4
    future = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    assert (await fetch(f"/api/admin/audit-logs?action=user.updated&from={future.replace('+', '%2B')}",
                        user=admin_user)).json["pagination"]["total"] == 0
    assert (await fetch(f"/api/admin/audit-logs?action=user.updated&to={since}", user=admin_user)
            ).json["pagination"]["total"] == 0

    for query, field in (("from=yesterday", "from"), ("to=2024-13-01T00:00:00Z", "to"), ("page=0", "page"),
                         ("limit=1000", "limit"), (f"from={future.replace('+', '%2B')}&to={since}", "from"),
                         ("userId=" + "x" * 27, "userId")):
        error = assert_error(await fetch(f"/api/admin/audit-logs?{query}", user=admin_user), 400, "VALIDATION_FAILED")
        assert field in error_fields(error), (query, error)


@pytest.mark.gen_test
async def test_audit_log_bounds_at_the_calendars_ends(fetch, make_user, admin_user):
    ada = await make_user()
    assert (await fetch(f"/api/admin/users/{ada.id}", method="PUT", json={"tier": "pro"}, user=admin_user)).code == 200
    # Valid RFC 3339, but off the calendar once in UTC: a 400 naming the field, not a 500.
    for query, field in (("to=9999-12-31T23:59:59-23:59", "to"), ("from=0001-01-01T00:00:00%2B23:59", "from")):
        error = assert_error(await fetch(f"/api/admin/audit-logs?{query}", user=admin_user), 400, "VALIDATION_FAILED")
        assert field in error_fields(error), (query, error)
    # The last and first moments that stay on it are fine bounds.
    widest = await fetch("/api/admin/audit-logs?action=user.updated&from=0001-01-01T00:00:00-23:59"
                         "&to=9999-12-31T23:59:59%2B23:59", user=admin_user)
    assert widest.code == 200 and widest.json["pagination"]["total"] == 1
