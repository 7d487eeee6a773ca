"""The signed-in user's profile and password through the real server: allowed fields only
(no mass assignment), real time zones, and change-password ending the *other* sessions."""

from __future__ import annotations

import pytest

from vachat.accounts.audit import AUTH_PASSWORD_CHANGED
from vachat.accounts.models import AuditLog, User
from vachat.testing import assert_error, error_fields, login

NEW_PASSWORD = "Another-Secret-8&"


async def update(fetch, user, body):
    return await fetch("/api/users/profile", method="PUT", json=body, user=user)


async def change_password(fetch, user, current, new, **kwargs):
    return await fetch("/api/users/change-password", method="POST", user=user,
                       json={"currentPassword": current, "newPassword": new}, **kwargs)


# ---------------------------------------------------------------------------
# profile
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_read_my_profile(app, fetch, make_user):
    user = await make_user(first_name="Pat", last_name="Doe")
    response = await fetch("/api/users/profile", user=user)
    assert response.code == 200
    profile = app.schemas.validate("core/users/profile", response.json["data"])
    assert (profile["id"], profile["email"], profile["name"]) == (user.id, user.email, "Pat Doe")
    assert profile["preferences"] == {}
    assert "passwordHash" not in profile and "password_hash" not in profile
    assert_error(await fetch("/api/users/profile"), 401, "UNAUTHORIZED")


@pytest.mark.gen_test
async def test_update_the_allowed_fields(app, fetch, make_user):
    user = await make_user()
    response = await update(fetch, user, {
        "firstName": "  Ada ", "lastName": "Lovelace", "displayName": "Countess", "bio": "Analyst.",
        "timezone": "Europe/London", "language": "en-GB", "preferences": {"theme": "dark", "sound": True},
    })
    assert response.code == 200, response.body
    profile = app.schemas.validate("core/users/profile", response.json["data"])
    assert {k: profile[k] for k in ("firstName", "lastName", "displayName", "name", "bio", "timezone", "language")} == {
        "firstName": "Ada", "lastName": "Lovelace", "displayName": "Countess", "name": "Countess",
        "bio": "Analyst.", "timezone": "Europe/London", "language": "en-GB"}
    assert profile["preferences"] == {"theme": "dark", "sound": True}

    # Only what is sent changes; preferences merge key by key and null removes a key.
    response = await update(fetch, user, {"displayName": None, "preferences": {"sound": None, "fontSize": 14}})
    profile = response.json["data"]
    assert (profile["displayName"], profile["name"], profile["bio"]) == (None, "Ada Lovelace", "Analyst.")
    assert profile["preferences"] == {"theme": "dark", "fontSize": 14}
    assert (await fetch("/api/users/profile", user=user)).json["data"] == profile
    # The new name is what the server calls the user from the next request on.
    me = await fetch("/api/auth/me", user=user)
    assert me.json["data"]["name"] == "Ada Lovelace"


@pytest.mark.gen_test
async def test_privileged_fields_cannot_be_mass_assigned(app, fetch, make_user):
    user = await make_user()
    body = assert_error(await update(fetch, user, {
        "firstName": "Mallory", "role": "admin", "tier": "enterprise", "isActive": True,
        "isEmailVerified": True, "email": "boss@example.com", "passwordHash": "x",
    }), 400, "VALIDATION_FAILED")
    assert error_fields(body) == {name: "is not an allowed field" for name in
                               ("role", "tier", "isActive", "isEmailVerified", "email", "passwordHash")}
    stored = await app.db.run(User.get_by_id, user.id)
    assert (stored.first_name, stored.role_name, stored.tier, stored.is_email_verified, stored.email) == (
        "", "user", "free", False, user.email)


@pytest.mark.gen_test
async def test_time_zone_and_language_are_checked(fetch, make_user):
    user = await make_user()
    for bad in ("Mars/Olympus_Mons", "Europe/../etc/passwd", "europe/paris "):
        body = assert_error(await update(fetch, user, {"timezone": bad}), 400, "VALIDATION_FAILED")
        assert set(error_fields(body)) == {"timezone"}
    assert (await update(fetch, user, {"timezone": "America/Sao_Paulo"})).json["data"]["timezone"] == "America/Sao_Paulo"
    assert (await update(fetch, user, {"timezone": "UTC"})).code == 200
    body = assert_error(await update(fetch, user, {"language": "english please"}), 400, "VALIDATION_FAILED")
    assert set(error_fields(body)) == {"language"}


@pytest.mark.gen_test
async def test_bad_profile_bodies_get_a_clean_400(fetch, make_user):
    user = await make_user()
    assert_error(await update(fetch, user, {}), 400, "VALIDATION_FAILED")
    body = assert_error(await update(fetch, user, {"bio": "x" * 2001, "firstName": 7}), 400, "VALIDATION_FAILED")
    assert set(error_fields(body)) == {"bio", "firstName"}
    assert "preferences" in error_fields(assert_error(await update(fetch, user, {"preferences": ["a"]}), 400, "VALIDATION_FAILED"))
    huge = {"preferences": {f"k{i}": "v" * 500 for i in range(40)}}  # ~20 KB of JSON
    assert error_fields(assert_error(await update(fetch, user, huge), 400, "VALIDATION_FAILED")) == {
        "preferences": "must take at most 16384 bytes as JSON"}


# ---------------------------------------------------------------------------
# change-password
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_wrong_current_password_is_a_400_not_a_sign_out(fetch, make_user):
    user = await make_user()
    body = assert_error(await change_password(fetch, user, "Not-My-Passw0rd!", NEW_PASSWORD), 400, "VALIDATION_FAILED")
    assert error_fields(body) == {"currentPassword": "is incorrect"}
    assert (await fetch("/api/users/profile", user=user)).code == 200  # still signed in
    assert (await login(fetch, user.email, user.password)).code == 200


@pytest.mark.gen_test
async def test_new_password_must_meet_the_policy_and_differ(fetch, make_user):
    user = await make_user()
    weak = assert_error(await change_password(fetch, user, user.password, "password"), 400, "VALIDATION_FAILED")
    assert set(error_fields(weak)) == {"newPassword"}
    too_long = "Aa1!" + "z" * 69  # 73 bytes: refused, never truncated
    assert "newPassword" in error_fields(assert_error(await change_password(fetch, user, user.password, too_long),
                                                   400, "VALIDATION_FAILED"))
    same = assert_error(await change_password(fetch, user, user.password, user.password), 400, "VALIDATION_FAILED")
    assert error_fields(same) == {"newPassword": "must differ from the current password"}
    assert "currentPassword" in error_fields(assert_error(
        await fetch("/api/users/change-password", method="POST", user=user, json={"newPassword": NEW_PASSWORD}),
        400, "VALIDATION_FAILED"))


@pytest.mark.gen_test
async def test_change_password_ends_other_sessions_and_keeps_this_one(app, fetch, make_user, ws_connect):
    user = await make_user()
    other = await login(fetch, user.email, user.password)
    other_headers = {"Authorization": f"Bearer {other.json['data']['tokens']['accessToken']}"}
    this_socket = await ws_connect(user=user)
    other_socket = await ws_connect(headers=other_headers)
    await this_socket.receive("ready")
    await other_socket.receive("ready")

    response = await change_password(fetch, user, user.password, NEW_PASSWORD, headers={"User-Agent": "pw-test"})
    assert response.code == 200, response.body
    assert response.json["data"] == {"sessionsEnded": 1, "apiKeysRevoked": 0}

    assert (await other_socket.closed())[0] == 4401
    assert_error(await fetch("/api/users/profile", headers=other_headers), 401, "UNAUTHORIZED")
    assert (await fetch("/api/users/profile", user=user)).code == 200
    assert (await this_socket.request("ping"))["type"] == "pong"
    assert (await fetch("/api/auth/refresh", method="POST", json={"refreshToken": user.refresh_token})).code == 200

    assert_error(await login(fetch, user.email, user.password), 401, "UNAUTHORIZED")
    assert (await login(fetch, user.email, NEW_PASSWORD)).code == 200
    rows = await app.db.run(lambda: list(AuditLog.select().where(AuditLog.action == AUTH_PASSWORD_CHANGED).dicts()))
    assert [(r["user_id"], r["actor_id"], r["ip"], r["user_agent"]) for r in rows] == [
        (user.id, user.id, "127.0.0.1", "pw-test")]


@pytest.mark.gen_test
async def test_an_api_key_cannot_change_the_password(fetch, make_user):
    user = await make_user()
    created = await fetch("/api/auth/api-keys", method="POST", user=user, json={"name": "script"})
    assert created.code == 201, created.body
    key_headers = {"X-API-Key": created.json["data"]["key"]}
    response = await fetch("/api/users/change-password", method="POST", headers=key_headers,
                           json={"currentPassword": user.password, "newPassword": NEW_PASSWORD})
    assert_error(response, 403, "FORBIDDEN")
    assert (await login(fetch, user.email, user.password)).code == 200


@pytest.mark.vachat(config={"rate_limit_auth": "2/900s"})
@pytest.mark.gen_test
async def test_change_password_attempts_are_limited_per_user(fetch, make_user):
    user, bystander = await make_user(), await make_user()
    for _ in range(2):
        assert_error(await change_password(fetch, user, "Wrong-Guess-1!", NEW_PASSWORD), 400, "VALIDATION_FAILED")
    limited = await change_password(fetch, user, user.password, NEW_PASSWORD)
    assert_error(limited, 429, "RATE_LIMITED")
    assert int(limited.headers["Retry-After"]) > 0
    # Another user from the same address is not affected.
    assert (await change_password(fetch, bystander, bystander.password, NEW_PASSWORD)).code == 200


@pytest.mark.gen_test
async def test_openapi_documents_the_routes_with_their_schemas(fetch):
    paths = (await fetch("/api/openapi.json")).json["paths"]
    put = paths["/api/users/profile"]["put"]
    assert "profile-update" in str(put["requestBody"]) and "profile" in str(put["responses"]["200"])
    assert "change-password" in str(paths["/api/users/change-password"]["post"]["requestBody"])
