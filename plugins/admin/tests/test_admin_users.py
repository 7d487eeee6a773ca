"""Admin users routes through the real server: listing, searching, filtering, changing,
disabling, deleting (with every plugin's data), permissions, the last-administrator rule and
the audit entries each change leaves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peewee
import pytest

from vachat.plugin_api import BaseModel, Conflict, hookimpl
from vachat.testing import assert_error, error_fields, login

AGENT = {"User-Agent": "admin-tests/1.0"}


async def audit_entries(fetch: Any, admin: Any, **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"{name}={value}" for name, value in filters.items())
    response = await fetch(f"/api/admin/audit-logs?limit=100&{query}", user=admin)
    assert response.code == 200, response.body
    return response.data


# ---------------------------------------------------------------------------
# a plugin that keeps data per user: a table row, a file on disk, an in-memory entry
# ---------------------------------------------------------------------------


class Keepsake(BaseModel):
    owner_id = peewee.CharField(max_length=26, index=True)
    text = peewee.TextField()

    class Meta:
        table_name = "admin_test_keepsake"


class KeepsakePlugin:
    """Registered as a plugin module (its hookimpls are found by name)."""

    __version__ = "1.0"
    memory: dict[str, list[str]] = {}
    deleting_calls: list[str] = []
    refuse_for: set[str] = set()

    @staticmethod
    def folder(app: Any) -> Path:
        return Path(app.config.data_dir) / "keepsakes"

    @staticmethod
    @hookimpl
    async def vachat_user_deleting(app: Any, user_id: str) -> None:
        KeepsakePlugin.deleting_calls.append(user_id)
        if user_id in KeepsakePlugin.refuse_for:
            raise Conflict("This user holds records under legal hold")
        await app.db.run(lambda: Keepsake.delete().where(Keepsake.owner_id == user_id).execute())
        (KeepsakePlugin.folder(app) / user_id).unlink(missing_ok=True)
        KeepsakePlugin.memory.pop(user_id, None)


async def keep_something(app: Any, user_id: str, text: str) -> None:
    await app.db.run(Keepsake.create, owner_id=user_id, text=text)
    folder = KeepsakePlugin.folder(app)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / user_id).write_text(text)
    KeepsakePlugin.memory.setdefault(user_id, []).append(text)


@pytest.fixture
def keepsakes(app: Any) -> Any:
    app.db.engine.create_tables([Keepsake])
    KeepsakePlugin.memory.clear()
    KeepsakePlugin.deleting_calls.clear()
    KeepsakePlugin.refuse_for.clear()
    yield KeepsakePlugin
    app.db.engine.drop_tables([Keepsake])


with_keepsakes = pytest.mark.vachat(plugins=["admin", ("keepsake", KeepsakePlugin)])


# ---------------------------------------------------------------------------
# listing
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_list_users_paginates_searches_and_filters(fetch, make_user, admin_user):
    ada = await make_user(email="ada@lovelace.test", first_name="Ada", last_name="Lovelace", tier="pro")
    await make_user(email="grace@hopper.test", first_name="Grace", last_name="Hopper", is_active=False)
    await make_user(email="alan@turing.test", display_name="Percent 50%")
    await make_user(role="auditor", permissions=["audit.read"], email="audit@corp.test")

    everyone = await fetch("/api/admin/users?limit=2&sortBy=email&sortOrder=asc", user=admin_user)
    assert everyone.code == 200
    assert everyone.json["pagination"] == {"page": 1, "limit": 2, "total": 5, "totalPages": 3}
    assert [u["email"] for u in everyone.data] == ["ada@lovelace.test", "alan@turing.test"]
    third_page = await fetch("/api/admin/users?limit=2&page=3&sortBy=email&sortOrder=asc", user=admin_user)
    assert [u["email"] for u in third_page.data] == [admin_user.email]  # user…@example.test
    assert "passwordHash" not in everyone.data[0] and "password_hash" not in everyone.data[0]

    async def emails(query: str) -> list[str]:
        response = await fetch(f"/api/admin/users?sortBy=email&sortOrder=asc&{query}", user=admin_user)
        assert response.code == 200, response.body
        return [u["email"] for u in response.data]

    assert await emails("search=LOVELACE") == ["ada@lovelace.test"]  # a name, any case
    assert await emails("search=hopper.te") == ["grace@hopper.test"]  # part of an address
    assert await emails("search=50%25") == ["alan@turing.test"]  # % taken literally
    assert await emails("search=_") == []  # so is _
    assert await emails("isActive=false") == ["grace@hopper.test"]
    assert await emails("tier=pro") == [ada.email]
    assert await emails("role=auditor") == ["audit@corp.test"]
    assert await emails("role=admin") == [admin_user.email]


@pytest.mark.gen_test
async def test_bad_list_parameters_are_400_naming_each(fetch, admin_user):
    cases = {"page=0": "page", "limit=101": "limit", "sortBy=password": "sortBy",
             "isActive=maybe": "isActive", "sortOrder=up": "sortOrder", "search=" + "x" * 201: "search"}
    for query, field in cases.items():
        body = assert_error(await fetch(f"/api/admin/users?{query}", user=admin_user), 400, "VALIDATION_FAILED")
        assert field in error_fields(body), (query, body)


@pytest.mark.gen_test
async def test_get_one_user_and_unknown_ids_are_404(fetch, make_user, admin_user):
    ada = await make_user(first_name="Ada")
    response = await fetch(f"/api/admin/users/{ada.id}", user=admin_user)
    assert response.code == 200 and response.data["id"] == ada.id and response.data["firstName"] == "Ada"
    for method, body in (("GET", None), ("PUT", {"tier": "pro"}), ("DELETE", None)):
        assert_error(await fetch("/api/admin/users/01HZZZZZZZZZZZZZZZZZZZZZZZ", method=method, json=body,
                                 user=admin_user), 404, "NOT_FOUND")


# ---------------------------------------------------------------------------
# permissions
# ---------------------------------------------------------------------------

ROUTES = [
    ("GET", "/api/admin/dashboard", None, "admin.dashboard"),
    ("GET", "/api/admin/users", None, "users.read"),
    ("GET", "/api/admin/users/{id}", None, "users.read"),
    ("PUT", "/api/admin/users/{id}", {"tier": "pro"}, "users.update"),
    ("DELETE", "/api/admin/users/{id}", None, "users.delete"),
    ("GET", "/api/admin/roles", None, "roles.manage"),
    ("POST", "/api/admin/roles", {"name": "role-{n}"}, "roles.manage"),
    ("PUT", "/api/admin/roles/{role}", {"description": "edited"}, "roles.manage"),
    ("GET", "/api/admin/permissions", None, "roles.manage"),
    ("GET", "/api/admin/audit-logs", None, "audit.read"),
]


@pytest.mark.gen_test(timeout=60)
async def test_each_route_needs_its_own_permission(fetch, make_user, admin_user):
    roles = (await fetch("/api/admin/roles", user=admin_user)).data
    user_role_id = next(role["id"] for role in roles if role["name"] == "user")
    everything = sorted({permission for *_, permission in ROUTES})
    for number, (method, path, body, permission) in enumerate(ROUTES):
        target = await make_user()
        url = path.format(id=target.id, role=user_role_id)
        payload = {k: v.format(n=number) for k, v in body.items()} if body else None
        assert_error(await fetch(url, method=method, json=payload), 401, "UNAUTHORIZED")
        # Every admin permission but this one is not enough.
        others = await make_user(role=f"all-but-{number}", permissions=[p for p in everything if p != permission])
        denied = assert_error(await fetch(url, method=method, json=payload, user=others), 403, "FORBIDDEN")
        assert permission in denied["error"]
        holder = await make_user(role=f"only-{number}", permissions=[permission])
        allowed = await fetch(url, method=method, json=payload, user=holder)
        assert allowed.code in (200, 201), (method, path, allowed.body)


# ---------------------------------------------------------------------------
# changing users
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_put_changes_role_tier_and_verified_and_audits_each_with_the_admin(fetch, make_user, admin_user):
    await make_user(role="auditor", permissions=["audit.read"])
    ada = await make_user()
    response = await fetch(f"/api/admin/users/{ada.id}", method="PUT", user=admin_user, headers=AGENT,
                           json={"role": "auditor", "tier": "pro", "isEmailVerified": True})
    assert response.code == 200, response.body
    assert (response.data["role"], response.data["tier"], response.data["isEmailVerified"]) == ("auditor", "pro", True)
    assert (await fetch(f"/api/admin/users/{ada.id}", user=admin_user)).data["tier"] == "pro"

    entries = await audit_entries(fetch, admin_user, userId=ada.id)
    by_action = {entry["action"]: entry for entry in entries}
    assert by_action["user.role_changed"]["details"] == {"from": "user", "to": "auditor"}
    assert by_action["user.updated"]["details"] == {"changes": {
        "tier": {"from": "free", "to": "pro"}, "isEmailVerified": {"from": False, "to": True}}}
    for action in ("user.role_changed", "user.updated"):
        entry = by_action[action]
        assert (entry["actorId"], entry["ip"], entry["userAgent"]) == (admin_user.id, "127.0.0.1", "admin-tests/1.0")


@pytest.mark.gen_test
async def test_a_new_role_takes_effect_on_the_next_request(fetch, make_user, admin_user):
    await make_user(role="reader", permissions=["users.read"])
    ada = await make_user()
    assert_error(await fetch("/api/admin/users", user=ada), 403, "FORBIDDEN")
    assert (await fetch(f"/api/admin/users/{ada.id}", method="PUT", json={"role": "reader"}, user=admin_user)).code == 200
    assert (await fetch("/api/admin/users", user=ada)).code == 200  # the same token, new permissions


@pytest.mark.gen_test
async def test_bad_changes_are_400_naming_the_field(fetch, make_user, admin_user):
    ada = await make_user()
    url = f"/api/admin/users/{ada.id}"
    cases = [({"isActive": "no"}, "isActive"), ({"tier": "Pro Plus"}, "tier"), ({"email": "x@y.z"}, "email"),
             ({"role": "no-such-role"}, "role"), ({"isEmailVerified": None}, "isEmailVerified"), ({}, "(body)")]
    for body, field in cases:
        error = assert_error(await fetch(url, method="PUT", json=body, user=admin_user), 400, "VALIDATION_FAILED")
        assert field in error_fields(error) or (field == "(body)" and error.get("details")), (body, error)
    assert_error(await fetch(url, method="PUT", body="{not json", user=admin_user,
                             headers={"Content-Type": "application/json"}), 400, "VALIDATION_FAILED")
    assert_error(await fetch(url, method="PUT", body="tier=pro", user=admin_user,
                             headers={"Content-Type": "application/x-www-form-urlencoded"}), 415, "UNSUPPORTED_MEDIA_TYPE")
    unchanged = (await fetch(url, user=admin_user)).data
    assert (unchanged["role"], unchanged["tier"], unchanged["isActive"]) == ("user", "free", True)


@pytest.mark.gen_test
async def test_disabling_refuses_the_token_and_closes_the_socket_at_once(fetch, ws_connect, make_user, admin_user):
    ada = await make_user()
    socket = await ws_connect(user=ada)
    await socket.receive("ready")
    response = await fetch(f"/api/admin/users/{ada.id}", method="PUT", json={"isActive": False}, user=admin_user)
    assert response.code == 200 and response.data["isActive"] is False
    code, _ = await socket.closed()
    assert code == 4401
    assert_error(await fetch("/api/auth/me", user=ada), 401, "UNAUTHORIZED")
    assert_error(await login(fetch, ada.email, ada.password), 403, "FORBIDDEN")  # "This account is disabled"
    [entry] = await audit_entries(fetch, admin_user, userId=ada.id, action="user.disabled")
    assert entry["actorId"] == admin_user.id
    # Enabling again lets them sign in (their old sessions stay ended).
    assert (await fetch(f"/api/admin/users/{ada.id}", method="PUT", json={"isActive": True}, user=admin_user)).code == 200
    assert (await login(fetch, ada.email, ada.password)).code == 200
    assert_error(await fetch("/api/auth/me", user=ada), 401, "UNAUTHORIZED")
    assert len(await audit_entries(fetch, admin_user, userId=ada.id, action="user.enabled")) == 1


# ---------------------------------------------------------------------------
# the last administrator
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_the_last_holder_of_star_cannot_be_deleted_or_disabled(fetch, make_user, admin_user):
    url = f"/api/admin/users/{admin_user.id}"
    for method, body in (("DELETE", None), ("PUT", {"isActive": False})):
        assert_error(await fetch(url, method=method, json=body, user=admin_user), 409, "CONFLICT")
    # Its own role and that role's permissions are not its to change at all (test_escalation).
    assert_error(await fetch(url, method="PUT", json={"role": "user"}, user=admin_user), 403, "FORBIDDEN")
    me = (await fetch(url, user=admin_user)).data
    assert (me["role"], me["isActive"]) == ("admin", True)

    # A disabled administrator does not count; another active one (any role with *) does.
    await make_user(role="admin", is_active=False)
    assert_error(await fetch(url, method="PUT", json={"isActive": False}, user=admin_user), 409, "CONFLICT")
    root = await make_user(role="root", permissions=["*"])
    demoted = await fetch(url, method="PUT", json={"role": "user"}, user=root)
    assert demoted.code == 200 and demoted.data["role"] == "user"
    assert_error(await fetch(f"/api/admin/users/{root.id}", method="DELETE", user=root), 409, "CONFLICT")


# ---------------------------------------------------------------------------
# deleting
# ---------------------------------------------------------------------------


@with_keepsakes
@pytest.mark.gen_test
async def test_deleting_removes_the_user_and_their_data_in_every_plugin(app, fetch, ws_connect, make_user,
                                                                       admin_user, keepsakes):
    ada, bob = await make_user(), await make_user()
    for user in (ada, bob):
        await keep_something(app, user.id, f"{user.email}'s diary")
    key = await fetch("/api/auth/api-keys", method="POST", json={"name": "script"}, user=ada)
    assert key.code == 201
    socket = await ws_connect(user=ada)
    await socket.receive("ready")

    response = await fetch(f"/api/admin/users/{ada.id}", method="DELETE", user=admin_user, headers=AGENT)
    assert response.code == 200 and response.data == {"id": ada.id, "deleted": True}

    assert keepsakes.deleting_calls == [ada.id]
    assert await app.db.run(lambda: [k.owner_id for k in Keepsake.select()]) == [bob.id]
    assert not (keepsakes.folder(app) / ada.id).exists() and (keepsakes.folder(app) / bob.id).exists()
    assert list(keepsakes.memory) == [bob.id]
    assert (await socket.closed())[0] == 4401
    assert_error(await fetch(f"/api/admin/users/{ada.id}", user=admin_user), 404, "NOT_FOUND")
    assert_error(await fetch("/api/auth/me", user=ada), 401, "UNAUTHORIZED")
    assert_error(await fetch("/api/auth/me", headers={"X-API-Key": key.data["key"]}), 401, "UNAUTHORIZED")
    assert_error(await login(fetch, ada.email, ada.password), 401, "UNAUTHORIZED")

    def account_rows() -> dict[str, int]:
        tables = ("sessions", "api_keys", "user_preferences", "user_statistics", "password_resets",
                  "email_verifications")
        engine = app.db.engine
        return {table: engine.execute_sql(f"SELECT COUNT(*) FROM {table} WHERE user_id = %s"
                                          .replace("%s", engine.param), (ada.id,)).fetchone()[0]
                for table in tables}

    assert set((await app.db.run(account_rows)).values()) == {0}
    # The trail stays: earlier rows about ada, and who deleted her, from where.
    entries = await audit_entries(fetch, admin_user, userId=ada.id)
    assert {"user.deleted", "auth.api_key_created"} <= {entry["action"] for entry in entries}
    deleted = next(entry for entry in entries if entry["action"] == "user.deleted")
    assert (deleted["actorId"], deleted["ip"], deleted["userAgent"]) == (admin_user.id, "127.0.0.1", "admin-tests/1.0")
    # An operator may retry: the user is gone, so it is a 404, not a 500.
    assert_error(await fetch(f"/api/admin/users/{ada.id}", method="DELETE", user=admin_user), 404, "NOT_FOUND")


@with_keepsakes
@pytest.mark.gen_test
async def test_a_plugin_refusing_the_deletion_keeps_the_account(app, fetch, make_user, admin_user, keepsakes):
    ada = await make_user()
    await keep_something(app, ada.id, "kept")
    keepsakes.refuse_for.add(ada.id)
    assert_error(await fetch(f"/api/admin/users/{ada.id}", method="DELETE", user=admin_user), 409, "CONFLICT")
    user = (await fetch(f"/api/admin/users/{ada.id}", user=admin_user)).data
    assert user["isActive"] is True  # restored: the deletion did not happen
    assert await app.db.run(lambda: Keepsake.select().count()) == 1
    assert (await login(fetch, ada.email, ada.password)).code == 200
    assert not await audit_entries(fetch, admin_user, userId=ada.id, action="user.deleted")
