"""Delegated administration never escalates, through the real server: nobody changes their own
role or tier or their own role's permissions; a role (or a permission added to a role) is
given only by someone holding all it grants, ``*`` only by ``*``; an account or role holding
more than the actor cannot be changed, disabled or deleted by them. Each refusal is 403
``FORBIDDEN`` and audited (``access.escalation_refused``)."""

from __future__ import annotations

import pytest

from vachat.testing import assert_error


async def _user(fetch, admin_user, user) -> dict:
    return (await fetch(f"/api/admin/users/{user.id}", user=admin_user)).data


async def _role_id(fetch, admin_user, name: str) -> str:
    roles = (await fetch("/api/admin/roles", user=admin_user)).data
    return next(role["id"] for role in roles if role["name"] == name)


async def _refusals(fetch, admin_user) -> list[dict]:
    return (await fetch("/api/admin/audit-logs?action=access.escalation_refused&limit=100", user=admin_user)).data


@pytest.mark.gen_test
async def test_a_user_manager_cannot_raise_itself_or_touch_an_administrator(fetch, make_user, admin_user):
    manager = await make_user(role="manager", permissions=["users.read", "users.update", "users.delete"])
    plain = await make_user()

    for body in ({"role": "admin"}, {"tier": "enterprise"}, {"role": "user"}):
        assert_error(await fetch(f"/api/admin/users/{manager.id}", method="PUT", user=manager, json=body),
                     403, "FORBIDDEN")
    me = await _user(fetch, admin_user, manager)
    assert (me["role"], me["tier"]) == ("manager", "free")

    assert_error(await fetch(f"/api/admin/users/{plain.id}", method="PUT", user=manager, json={"role": "admin"}),
                 403, "FORBIDDEN")
    for change in ({"isActive": False}, {"tier": "free"}, {"isEmailVerified": False}):
        assert_error(await fetch(f"/api/admin/users/{admin_user.id}", method="PUT", user=manager, json=change),
                     403, "FORBIDDEN")
    assert_error(await fetch(f"/api/admin/users/{admin_user.id}", method="DELETE", user=manager), 403, "FORBIDDEN")
    assert (await _user(fetch, admin_user, admin_user))["isActive"] is True
    assert (await fetch("/api/auth/me", user=admin_user)).code == 200  # still signed in
    assert (await _user(fetch, admin_user, plain))["role"] == "user"

    # What it holds, it may give and change: a plain account's tier, a role within its own.
    changed = await fetch(f"/api/admin/users/{plain.id}", method="PUT", user=manager,
                          json={"tier": "pro", "role": "manager"})
    assert changed.code == 200 and (changed.data["tier"], changed.data["role"]) == ("pro", "manager")

    refusals = await _refusals(fetch, admin_user)
    assert len(refusals) == 8
    assert {entry["actorId"] for entry in refusals} == {manager.id}
    assert {entry["userId"] for entry in refusals} == {manager.id, plain.id, admin_user.id}
    assert all(entry["details"]["reason"] for entry in refusals)


@pytest.mark.gen_test
async def test_an_administrator_cannot_change_its_own_role_or_tier(fetch, make_user, admin_user):
    other_admin = await make_user(role="admin")
    for body in ({"role": "user"}, {"tier": "pro"}):
        assert_error(await fetch(f"/api/admin/users/{admin_user.id}", method="PUT", user=admin_user, json=body),
                     403, "FORBIDDEN")
    # ...but may change another's (``*`` covers everything).
    assert (await fetch(f"/api/admin/users/{other_admin.id}", method="PUT", user=admin_user,
                        json={"tier": "pro"})).code == 200


@pytest.mark.gen_test
async def test_a_role_manager_cannot_grant_what_it_does_not_hold(fetch, make_user, admin_user):
    manager = await make_user(role="rolekeeper", permissions=["roles.manage", "users.read"])
    await make_user(role="helpers", permissions=["users.read"])
    own = await _role_id(fetch, admin_user, "rolekeeper")
    user_role = await _role_id(fetch, admin_user, "user")
    helpers = await _role_id(fetch, admin_user, "helpers")
    admin_role = await _role_id(fetch, admin_user, "admin")

    refused = [
        (f"/api/admin/roles/{own}", "PUT", {"permissions": ["*"]}),  # its own role
        (f"/api/admin/roles/{own}", "PUT", {"permissions": ["users.read"]}),  # even narrowing it
        (f"/api/admin/roles/{user_role}", "PUT", {"permissions": ["*"]}),
        (f"/api/admin/roles/{helpers}", "PUT", {"permissions": ["users.read", "users.delete"]}),
        (f"/api/admin/roles/{admin_role}", "PUT", {"permissions": ["users.read"]}),  # holds more than it
        ("/api/admin/roles", "POST", {"name": "root", "permissions": ["*"]}),
        ("/api/admin/roles", "POST", {"name": "deleters", "permissions": ["users.delete"]}),
    ]
    for path, method, body in refused:
        assert_error(await fetch(path, method=method, user=manager, json=body), 403, "FORBIDDEN")
    roles = {role["name"]: role["permissions"] for role in (await fetch("/api/admin/roles", user=admin_user)).data}
    assert (roles["rolekeeper"], roles["user"], roles["helpers"], roles["admin"]) == \
        (["roles.manage", "users.read"], [], ["users.read"], ["*"])
    assert "root" not in roles and "deleters" not in roles

    # Within what it holds, it may: grant, take away, create.
    assert (await fetch(f"/api/admin/roles/{helpers}", method="PUT", user=manager,
                        json={"permissions": ["roles.manage", "users.read"]})).code == 200
    assert (await fetch(f"/api/admin/roles/{helpers}", method="PUT", user=manager,
                        json={"permissions": []})).code == 200
    assert (await fetch("/api/admin/roles", method="POST", user=manager,
                        json={"name": "readers", "permissions": ["users.read"]})).code == 201
    # A description is not a grant.
    assert (await fetch(f"/api/admin/roles/{own}", method="PUT", user=manager,
                        json={"description": "Keeps the roles"})).code == 200

    refusals = await _refusals(fetch, admin_user)
    assert len(refusals) == len(refused) and {entry["actorId"] for entry in refusals} == {manager.id}


@pytest.mark.gen_test
async def test_only_a_holder_of_star_grants_star(fetch, make_user, admin_user):
    await make_user(role="ops", permissions=["users.read"])
    ops = await _role_id(fetch, admin_user, "ops")
    granted = await fetch(f"/api/admin/roles/{ops}", method="PUT", user=admin_user, json={"permissions": ["*"]})
    assert granted.code == 200 and granted.data["permissions"] == ["*"]
    assert (await fetch("/api/admin/roles", method="POST", user=admin_user,
                        json={"name": "root", "permissions": ["*"]})).code == 201
