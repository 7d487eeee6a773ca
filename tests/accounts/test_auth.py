"""Accounts through the real server: register, login, logout, refresh rotation and reuse,
me, sessions, disabling, rate limits, the password policy and the 72-byte rule, audit rows."""

import json
import os
import secrets
import threading

import pytest
import tornado.httpclient

from vachat.accounts.models import AuditLog, Session, User, UserPreferences, UserStatistics
from vachat.accounts.sessions import set_user_active
from vachat.testing import assert_error, login as sign_in, needs_redis, open_websocket

STRONG = "Correct-Horse-7!"


async def register(fetch, email="alice@example.test", password=STRONG, **extra):
    return await fetch("/api/auth/register", method="POST", json={"email": email, "password": password, **extra})


async def login(fetch, email, password=STRONG, headers=None):
    return await sign_in(fetch, email, password, headers=headers)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


async def audit_rows(app, action=None):
    def rows():
        query = AuditLog.select().order_by(AuditLog.created_at)
        if action:
            query = query.where(AuditLog.action == action)
        return list(query)
    return await app.db.run(rows)


# -- register -----------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_register_returns_user_and_working_tokens(app, fetch):
    response = await register(fetch, email="  Alice@Example.TEST ", firstName="Alice", lastName="Liddell",
                              timezone="Europe/Paris", language="fr")
    assert response.code == 201, response.body
    data = response.data
    user = data["user"]
    assert user["email"] == "alice@example.test"  # stored lowercased
    assert user["firstName"] == "Alice" and user["lastName"] == "Liddell" and user["name"] == "Alice Liddell"
    assert user["role"] == "user" and user["tier"] == "free"
    assert user["isActive"] is True and user["isEmailVerified"] is False
    assert user["timezone"] == "Europe/Paris" and user["language"] == "fr"
    assert not any("password" in key.lower() for key in user)
    tokens = data["tokens"]
    assert tokens["tokenType"] == "Bearer" and tokens["expiresIn"] == 900 and tokens["refreshExpiresIn"] == 7 * 24 * 3600

    me = await fetch("/api/auth/me", headers=bearer(tokens["accessToken"]))
    assert me.code == 200, me.body
    assert me.data["id"] == user["id"] and me.data["sessionId"] == data["sessionId"]
    assert me.data["permissions"] == [] and me.data["apiKeyId"] is None

    stored = await app.db.run(User.get_by_id, user["id"])
    assert stored.password_hash.startswith("$2") and STRONG not in stored.password_hash
    assert await app.db.run(lambda: UserPreferences.select().where(UserPreferences.user == user["id"]).count()) == 1
    assert await app.db.run(lambda: UserStatistics.select().where(UserStatistics.user == user["id"]).count()) == 1
    [row] = await audit_rows(app, "auth.register")
    assert row.user_id == user["id"] and row.ip == "127.0.0.1"


@pytest.mark.gen_test
async def test_bcrypt_runs_on_the_hashing_threads_never_on_the_ioloop(app, fetch, monkeypatch):
    from vachat.accounts import passwords

    threads = []
    for name in ("_hash", "_check"):
        original = getattr(passwords, name)

        def recorded(*args, _original=original, _name=name):
            threads.append((_name, threading.current_thread().name))
            return _original(*args)

        monkeypatch.setattr(passwords, name, recorded)
    assert (await register(fetch, email="hashed@example.test")).code == 201
    assert (await login(fetch, "hashed@example.test")).code == 200
    assert [name for name, _ in threads] == ["_hash", "_check"]
    assert all(thread.startswith("vachat-hash-") for _, thread in threads), threads


@pytest.mark.gen_test
async def test_register_same_email_in_other_case_conflicts(fetch):
    assert (await register(fetch, email="bob@example.test")).code == 201
    body = assert_error(await register(fetch, email="BOB@example.TEST"), 409, "CONFLICT")
    assert body["details"][0]["field"] == "email"


@pytest.mark.gen_test
async def test_register_refuses_mass_assignment_and_bad_fields(fetch):
    body = assert_error(await register(fetch, role="admin", isActive=True, tier="pro", isEmailVerified=True),
                        400, "VALIDATION_FAILED")
    assert {d["field"] for d in body["details"]} == {"role", "isActive", "tier", "isEmailVerified"}
    body = assert_error(await register(fetch, email="not-an-email"), 400, "VALIDATION_FAILED")
    assert body["details"][0]["field"] == "email"
    assert_error(await fetch("/api/auth/register", method="POST", json={"email": "x@example.test"}),
                 400, "VALIDATION_FAILED")


@pytest.mark.parametrize("password, expected", [
    ("Sh0rt!", "at least 8"),
    ("alllowercase1!", "upper-case"),
    ("ALLUPPERCASE1!", "lower-case"),
    ("NoDigitsHere!", "digit"),
    ("NoSpecial123", "special"),
    ("Password123!", "too common"),
    ("P@ssw0rd2024!", "too common"),
    ("Summer2024!", "too common"),
    ("Qwerty123!", "too common"),
    ("Xalice-Zebra9!", "e-mail"),
])
@pytest.mark.gen_test
async def test_password_policy(fetch, password, expected):
    body = assert_error(await register(fetch, email="alice@example.test", password=password), 400, "VALIDATION_FAILED")
    assert all(detail["field"] == "password" for detail in body["details"])
    assert any(expected in detail["message"] for detail in body["details"]), body


# -- the 72-byte rule -----------------------------------------------------------------------


@pytest.mark.gen_test
async def test_password_over_72_bytes_is_refused_not_truncated(app, fetch):
    exactly_72 = "Aa1!" + "x" * 68
    assert len(exactly_72.encode()) == 72
    response = await register(fetch, email="long@example.test", password=exactly_72)
    assert response.code == 201, response.body
    assert (await login(fetch, "long@example.test", exactly_72)).code == 200

    # One more byte: bcrypt would silently ignore it; we refuse the new password instead.
    body = assert_error(await register(fetch, email="longer@example.test", password=exactly_72 + "y"),
                        400, "VALIDATION_FAILED")
    assert body["details"] == [{"field": "password", "message": "must be at most 72 bytes (UTF-8)"}]
    # Bytes, not characters: 30 two-byte characters are 60 bytes and fine, 37 are 74 and not.
    assert (await register(fetch, email="utf8@example.test", password="Aa1!" + "é" * 30)).code == 201
    body = assert_error(await register(fetch, email="utf8b@example.test", password="Aa1!" + "é" * 35),
                        400, "VALIDATION_FAILED")
    assert "72 bytes" in body["details"][0]["message"]

    # At login, a longer password sharing the first 72 bytes must not match (no truncation)
    # and must not be a 500: it is just wrong.
    assert_error(await login(fetch, "long@example.test", exactly_72 + "extra"), 401, "UNAUTHORIZED")
    assert_error(await login(fetch, "long@example.test", "é" * 500), 401, "UNAUTHORIZED")


# -- login ------------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_login_success_and_identical_failures(app, fetch):
    created = (await register(fetch, email="carol@example.test")).data
    response = await login(fetch, "CAROL@example.test", headers={"User-Agent": "pytest-agent/1"})
    assert response.code == 200, response.body
    assert response.data["user"]["id"] == created["user"]["id"]
    assert response.data["user"]["lastLoginAt"] is not None
    assert response.data["sessionId"] != created["sessionId"]
    me = await fetch("/api/auth/me", headers=bearer(response.data["tokens"]["accessToken"]))
    assert me.code == 200

    wrong = await login(fetch, "carol@example.test", "Wrong-Password-1!")
    unknown = await login(fetch, "nobody@example.test", STRONG)
    assert_error(wrong, 401, "UNAUTHORIZED")
    assert wrong.json == unknown.json  # no enumeration: the very same answer

    [success] = await audit_rows(app, "auth.login")
    assert success.user_id == created["user"]["id"] and success.user_agent == "pytest-agent/1"
    assert success.ip == "127.0.0.1"
    failures = await audit_rows(app, "auth.login_failed")
    assert [(f.user_id, f.details["reason"]) for f in failures] == [
        (created["user"]["id"], "bad_password"), (None, "unknown_email")]
    assert all("Wrong-Password" not in str(f.details) for f in failures)


@pytest.mark.gen_test
async def test_disabled_user_cannot_log_in(app, fetch, make_user):
    user = await make_user(is_active=False)
    assert_error(await login(fetch, user.email, user.password), 403, "FORBIDDEN")
    assert_error(await login(fetch, user.email, "Wrong-Password-1!"), 401, "UNAUTHORIZED")
    assert_error(await fetch("/api/auth/me", user=user), 401, "UNAUTHORIZED")


# -- logout, refresh, sessions --------------------------------------------------------------


@pytest.mark.gen_test
async def test_logout_ends_the_session_and_closes_its_socket(app, fetch, make_user, ws_connect):
    user = await make_user()
    other_device = await login(fetch, user.email, user.password)
    socket = await ws_connect(user=user)
    ready = await socket.receive("ready")
    assert ready["data"] == {"userId": user.id, "sessionId": user.session_id, "protocol": 1}
    other_socket = await ws_connect(headers=bearer(other_device.data["tokens"]["accessToken"]))
    await other_socket.receive("ready")

    response = await fetch("/api/auth/logout", method="POST", user=user)
    assert response.code == 200, response.body
    assert (await socket.closed())[0] == 4401
    assert_error(await fetch("/api/auth/me", user=user), 401, "UNAUTHORIZED")
    assert_error(await fetch("/api/auth/refresh", method="POST", json={"refreshToken": user.refresh_token}),
                 401, "UNAUTHORIZED")
    # The other device's session is untouched.
    assert (await fetch("/api/auth/me", headers=bearer(other_device.data["tokens"]["accessToken"]))).code == 200
    assert (await other_socket.request("ping"))["type"] == "pong"
    [row] = await audit_rows(app, "auth.logout")
    assert row.user_id == user.id and row.details == {"sessionId": user.session_id}


@pytest.mark.gen_test
async def test_refresh_rotates_and_reuse_revokes_the_session(app, fetch, make_user, ws_connect):
    user = await make_user()
    first = await fetch("/api/auth/refresh", method="POST", json={"refreshToken": user.refresh_token})
    assert first.code == 200, first.body
    tokens = first.data["tokens"]
    assert first.data["sessionId"] == user.session_id
    assert tokens["refreshToken"] != user.refresh_token
    assert (await fetch("/api/auth/me", headers=bearer(tokens["accessToken"]))).code == 200
    socket = await ws_connect(headers=bearer(tokens["accessToken"]))
    await socket.receive("ready")

    # The old refresh token again: reuse. The whole session ends, new tokens included.
    reuse = await fetch("/api/auth/refresh", method="POST", json={"refreshToken": user.refresh_token})
    assert_error(reuse, 401, "UNAUTHORIZED")
    assert "already used" in reuse.json["error"]
    assert_error(await fetch("/api/auth/me", headers=bearer(tokens["accessToken"])), 401, "UNAUTHORIZED")
    assert_error(await fetch("/api/auth/refresh", method="POST", json={"refreshToken": tokens["refreshToken"]}),
                 401, "UNAUTHORIZED")
    assert (await socket.closed())[0] == 4401
    session = await app.db.run(Session.get_by_id, user.session_id)
    assert session.revoked_at is not None and session.revoked_reason == "refresh_reuse"
    [row] = await audit_rows(app, "auth.refresh_reuse")
    assert row.user_id == user.id and row.details == {"sessionId": user.session_id}


@pytest.mark.gen_test
async def test_refresh_refuses_wrong_kinds_of_token(fetch, make_user):
    user = await make_user()
    assert_error(await fetch("/api/auth/refresh", method="POST", json={"refreshToken": user.access_token}),
                 401, "UNAUTHORIZED")
    assert_error(await fetch("/api/auth/refresh", method="POST", json={"refreshToken": "garbage"}),
                 401, "UNAUTHORIZED")
    assert_error(await fetch("/api/auth/refresh", method="POST", json={}), 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
async def test_refresh_of_a_disabled_user_fails(app, fetch, make_user):
    user = await make_user()
    await app.db.run(lambda: User.update(is_active=False).where(User.id == user.id).execute())
    assert_error(await fetch("/api/auth/refresh", method="POST", json={"refreshToken": user.refresh_token}),
                 401, "UNAUTHORIZED")


@pytest.mark.gen_test
async def test_sessions_list_and_revoke(app, fetch, make_user, ws_connect):
    user = await make_user()
    second = (await login(fetch, user.email, user.password)).data
    listing = await fetch("/api/auth/sessions", user=user)
    assert listing.code == 200
    by_id = {item["id"]: item for item in listing.data}
    assert set(by_id) == {user.session_id, second["sessionId"]}
    assert by_id[user.session_id]["current"] is True and by_id[second["sessionId"]]["current"] is False
    assert by_id[user.session_id]["userAgent"] == "vachat-tests"

    socket = await ws_connect(headers=bearer(second["tokens"]["accessToken"]))
    await socket.receive("ready")
    response = await fetch(f"/api/auth/sessions/{second['sessionId']}", method="DELETE", user=user)
    assert response.code == 200, response.body
    assert (await socket.closed())[0] == 4401
    assert_error(await fetch("/api/auth/me", headers=bearer(second["tokens"]["accessToken"])), 401, "UNAUTHORIZED")
    assert (await fetch("/api/auth/me", user=user)).code == 200
    assert [item["id"] for item in (await fetch("/api/auth/sessions", user=user)).data] == [user.session_id]
    # Already ended, or never existed: 404.
    assert_error(await fetch(f"/api/auth/sessions/{second['sessionId']}", method="DELETE", user=user), 404, "NOT_FOUND")
    assert_error(await fetch("/api/auth/sessions/01HZZZZZZZZZZZZZZZZZZZZZZZ", method="DELETE", user=user),
                 404, "NOT_FOUND")
    [row] = await audit_rows(app, "auth.session_revoked")
    assert row.details["sessionId"] == second["sessionId"]


@pytest.mark.gen_test
async def test_another_users_session_is_not_found(fetch, make_user):
    alice, mallory = await make_user(), await make_user()
    assert_error(await fetch(f"/api/auth/sessions/{alice.session_id}", method="DELETE", user=mallory),
                 404, "NOT_FOUND")
    assert (await fetch("/api/auth/me", user=alice)).code == 200  # untouched
    ids = [item["id"] for item in (await fetch("/api/auth/sessions", user=mallory)).data]
    assert ids == [mallory.session_id]


@pytest.mark.gen_test
async def test_disabling_a_user_ends_everything_at_once(app, fetch, make_user, ws_connect):
    user = await make_user()
    key = (await fetch("/api/auth/api-keys", method="POST", json={"name": "bot"}, user=user)).data["key"]
    assert (await fetch("/api/auth/me", headers={"X-API-Key": key})).code == 200  # cached now
    socket = await ws_connect(user=user)
    await socket.receive("ready")
    key_socket = await ws_connect(headers={"X-API-Key": key})
    await key_socket.receive("ready")

    assert await set_user_active(app, user.id, False) is True
    assert (await socket.closed())[0] == 4401
    assert (await key_socket.closed())[0] == 4401
    assert_error(await fetch("/api/auth/me", user=user), 401, "UNAUTHORIZED")
    assert_error(await fetch("/api/auth/me", headers={"X-API-Key": key}), 401, "UNAUTHORIZED")
    assert_error(await login(fetch, user.email, user.password), 403, "FORBIDDEN")
    assert [row.user_id for row in await audit_rows(app, "user.disabled")] == [user.id]

    await set_user_active(app, user.id, True)
    assert (await fetch("/api/auth/me", headers={"X-API-Key": key})).code == 200
    assert (await login(fetch, user.email, user.password)).code == 200


@pytest.mark.gen_test
async def test_endpoints_need_credentials(fetch):
    for method, path in [("GET", "/api/auth/me"), ("POST", "/api/auth/logout"), ("GET", "/api/auth/sessions"),
                         ("DELETE", "/api/auth/sessions/x"), ("GET", "/api/auth/api-keys"),
                         ("POST", "/api/auth/api-keys"), ("DELETE", "/api/auth/api-keys/x")]:
        assert_error(await fetch(path, method=method, json={} if method == "POST" else None), 401, "UNAUTHORIZED")


# -- rate limits (in-memory, or Redis when VACHAT_TEST_REDIS_URL is set) --------------------------


@pytest.mark.vachat(config={"rate_limit_auth": "3/900s"})
@pytest.mark.gen_test
async def test_login_is_limited_per_ip_and_spoofed_forwarding_does_not_help(fetch, make_user):
    user = await make_user()
    for _ in range(3):
        assert (await login(fetch, f"someone{_}@example.test", "Wrong-Password-1!")).code == 401
    limited = await login(fetch, user.email, user.password, headers={"X-Forwarded-For": "198.51.100.7"})
    body = assert_error(limited, 429, "RATE_LIMITED")
    assert int(limited.headers["Retry-After"]) >= 1
    assert body["error"]
    # Another action has its own bucket.
    assert (await register(fetch, email="fresh@example.test")).code == 201


@pytest.mark.vachat(config={"rate_limit_auth_account": "3/900s", "trusted_proxies": ["127.0.0.1/32"]})
@pytest.mark.gen_test
async def test_login_is_limited_per_account_whatever_the_ip_or_case(fetch, make_user):
    user = await make_user(email="target@example.test")
    spellings = ["target@example.test", "TARGET@example.test", "Target@Example.Test"]
    for number, spelling in enumerate(spellings):
        response = await login(fetch, spelling, "Wrong-Password-1!",
                               headers={"X-Forwarded-For": f"203.0.113.{number + 1}"})
        assert response.code == 401
    # A fresh address (a trusted proxy forwards it), the right password: the account's own
    # limit (RATE_LIMIT_AUTH_ACCOUNT, across addresses) is spent.
    limited = await login(fetch, user.email, user.password, headers={"X-Forwarded-For": "203.0.113.50"})
    assert_error(limited, 429, "RATE_LIMITED")
    assert int(limited.headers["Retry-After"]) >= 1
    # Other accounts from that address are fine.
    other = await make_user()
    assert (await login(fetch, other.email, other.password, headers={"X-Forwarded-For": "203.0.113.50"})).code == 200


@pytest.mark.vachat(config={"rate_limit_auth": "2/900s"})
@pytest.mark.gen_test
async def test_register_is_limited(fetch):
    assert (await register(fetch, email="r1@example.test")).code == 201
    assert (await register(fetch, email="r2@example.test")).code == 201
    limited = await register(fetch, email="r3@example.test")
    assert_error(limited, 429, "RATE_LIMITED")
    assert "Retry-After" in limited.headers


@pytest.mark.gen_test
async def test_rate_limit_backend_matches_the_configuration(app, vachat_redis_url):
    from vachat.ratelimit import RedisRateLimiter

    assert isinstance(app.limiter, RedisRateLimiter) == bool(vachat_redis_url)


# -- hooks -------------------------------------------------------------------------------------


def _listener_plugin():
    import types

    from vachat.plugin_api import hookimpl

    module = types.ModuleType("listener")
    module.registered = []

    @hookimpl
    def vachat_user_registered(app, user):
        module.registered.append((user["id"], user["email"]))

    module.vachat_user_registered = vachat_user_registered
    return module


LISTENER = _listener_plugin()


@pytest.mark.vachat(plugins=[("listener", LISTENER)])
@pytest.mark.gen_test
async def test_registration_notifies_plugins(fetch):
    LISTENER.registered.clear()
    response = await register(fetch, email="hooked@example.test")
    assert response.code == 201
    assert LISTENER.registered == [(response.data["user"]["id"], "hooked@example.test")]


# -- two nodes sharing PostgreSQL/SQLite and Redis --------------------------------------------



async def node_fetch(server, path, method="GET", json_body=None, headers=None):
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        body = None if json_body is None else json.dumps(json_body)
        all_headers = dict(headers or {})
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        response = await client.fetch(server.base_url + path, method=method, body=body, headers=all_headers,
                                      raise_error=False, request_timeout=30)
        return response.code, json.loads(response.body) if response.body else None
    finally:
        client.close()


@needs_redis
@pytest.mark.gen_test(timeout=90)
async def test_revocation_on_one_node_takes_effect_on_the_other_at_once(server_process):
    node_a = server_process()
    await node_a.wait_ready()  # it applies the migrations; then the second starts on a migrated database
    node_b = server_process()
    await node_b.wait_ready()
    email = f"nodes-{secrets.token_hex(4)}@example.test"
    status, body = await node_fetch(node_a, "/api/auth/register", "POST", {"email": email, "password": STRONG})
    assert status == 201, body
    tokens = body["data"]["tokens"]
    headers = bearer(tokens["accessToken"])
    # Both nodes have now seen (and cached) the session.
    assert (await node_fetch(node_a, "/api/auth/me", headers=headers))[0] == 200
    assert (await node_fetch(node_b, "/api/auth/me", headers=headers))[0] == 200
    socket = await open_websocket(node_b.ws_url, headers)
    await socket.receive("ready")

    status, _ = await node_fetch(node_a, "/api/auth/logout", "POST", {}, headers=headers)
    assert status == 200
    assert (await node_fetch(node_b, "/api/auth/me", headers=headers))[0] == 401
    assert (await socket.closed(timeout=10))[0] == 4401
    for node in (node_a, node_b):
        node.terminate()
        assert await node.wait_exit() == 0


# -- the auth cache's own rules (no server needed) ---------------------------------------------


class _FlakyRedis:
    """Just enough of redis.asyncio for AuthCache, with a switch to make every call fail."""

    def __init__(self):
        self.data, self.down = {}, False

    def _check(self):
        if self.down:
            import redis.exceptions

            raise redis.exceptions.ConnectionError("down")

    async def get(self, key):
        self._check()
        return self.data.get(key)

    async def set(self, key, value, ex=None, nx=False):
        self._check()
        if not (nx and key in self.data):
            self.data[key] = value.encode() if isinstance(value, str) else value

    async def delete(self, *keys):
        self._check()
        for key in keys:
            self.data.pop(key, None)

    def pipeline(self, transaction=False):
        outer = self

        class Pipe:
            def __init__(self):
                self.calls = []

            async def __aenter__(self):
                return self

            async def __aexit__(self, *exc):
                return False

            def set(self, key, value, ex=None):
                self.calls.append((key, value))

            async def execute(self):
                outer._check()
                for key, value in self.calls:
                    outer.data[key] = value.encode()

        return Pipe()


@pytest.mark.parametrize("backend", ["memory", "redis"])
@pytest.mark.gen_test
async def test_cache_tombstones_win_over_a_racing_lookup(backend):
    from vachat.accounts.cache import AuthCache

    cache = AuthCache(_FlakyRedis() if backend == "redis" else None)
    await cache.tombstone("s:1")
    await cache.set("s:1", {"uid": "u"})  # a lookup that read the row before the revocation
    assert (await cache.get("s:1")) == {"revoked": True}
    await cache.set("s:2", {"uid": "u"})
    assert (await cache.get("s:2")) == {"uid": "u"}
    await cache.delete("s:2")
    assert await cache.get("s:2") is None


@pytest.mark.gen_test
async def test_cache_retries_a_revocation_redis_missed():
    from vachat.accounts.cache import REDIS_PREFIX, AuthCache
    from vachat.redis_client import RedisGuard

    redis = _FlakyRedis()
    clock = [0.0]
    cache = AuthCache(redis, RedisGuard(backoff=1.0, clock=lambda: clock[0]))
    await cache.set("s:1", {"uid": "u"})
    redis.down = True
    await cache.tombstone("s:1")  # lost: Redis is down
    assert await cache.get("s:1") is None  # while down, nothing is served from the cache
    redis.down = False
    clock[0] += 2  # past the guard's back-off
    assert await cache.get("s:1") is None  # the missed delete went first, then the lookup
    assert REDIS_PREFIX + "s:1" not in redis.data
