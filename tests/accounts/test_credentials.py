"""Hardening of the accounts (issue 7), through the real server: API keys end with a password
reset, bcrypt costs checked at start-up, the audit gaps, names without control characters,
errors that never echo a secret, one wording for a bad token, and login limits that count
only failures."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vachat.accounts.audit import (
    AUTH_EMAIL_VERIFICATION_FAILED, AUTH_PASSWORD_CHANGE_FAILED, AUTH_PASSWORD_RESET, AUTH_PASSWORD_RESET_FAILED,
)
from vachat.accounts.models import ApiKey, AuditLog
from vachat.config import ConfigError, load_settings

RUN_PY = Path(__file__).resolve().parents[2] / "run.py"
from vachat.testing import assert_error, error_fields, login


def run_server(env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    """``python run.py serve`` as an operator starts it; returns once the process exits."""
    environment = {"PATH": "/usr/bin:/bin", "LOG_DIR": "", "VACHAT_ENV": "test", "PORT": "0",
                   "HOST": "127.0.0.1", "DATABASE_URL": f"sqlite:///{tmp_path / 'start.db'}", **env}
    return subprocess.run([sys.executable, str(RUN_PY), "serve"], env=environment,
                          capture_output=True, text=True, timeout=60, cwd=str(RUN_PY.parent))


# ---------------------------------------------------------------------------
# 7. bcrypt costs outside 4-31 (and below 10 in production) stop the start-up
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("rounds", ["3", "32", "0", "-1", "100"])
def test_bcrypt_rounds_outside_what_bcrypt_accepts_are_refused(rounds):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"BCRYPT_ROUNDS": rounds})
    assert "BCRYPT_ROUNDS" in str(caught.value) and "4 to 31" in str(caught.value)


def test_bcrypt_rounds_below_10_are_refused_in_production_only():
    assert load_settings(environ={"BCRYPT_ROUNDS": "4"}).bcrypt_rounds == 4
    assert load_settings(environ={"BCRYPT_ROUNDS": "31"}).bcrypt_rounds == 31
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"BCRYPT_ROUNDS": "9", "VACHAT_ENV": "production"})
    assert "BCRYPT_ROUNDS" in str(caught.value) and "production" in str(caught.value)


@pytest.mark.parametrize("env", [{"BCRYPT_ROUNDS": "3"}, {"BCRYPT_ROUNDS": "32"},
                                 {"BCRYPT_ROUNDS": "9", "VACHAT_ENV": "production"}])
def test_the_server_refuses_to_start_with_a_bad_bcrypt_cost(env, tmp_path):
    result = run_server(env, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "BCRYPT_ROUNDS" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "start.db").exists()  # refused before touching anything


# ---------------------------------------------------------------------------
# 5. API keys do not survive the recovery of an account
# ---------------------------------------------------------------------------


async def create_key(fetch, user, name="intruder's key") -> str:
    response = await fetch("/api/auth/api-keys", method="POST", json={"name": name}, user=user)
    assert response.code == 201, response.body
    return response.data["key"]


async def mailed_token(app, email: str, kind: str) -> str:
    await app.mailer.drain()
    message = await app.mailer.outbox.receive(to=email)
    match = re.search(rf"/{kind}/([A-Za-z0-9_-]+)", message.text)
    assert match, message.text
    return match.group(1)


@pytest.mark.gen_test
async def test_a_password_reset_revokes_every_api_key(app, fetch, make_user, ws_connect):
    victim = await make_user()
    key = await create_key(fetch, victim)  # minted by whoever held a session
    assert (await fetch("/api/auth/me", headers={"X-API-Key": key})).code == 200  # and cached now
    socket = await ws_connect(headers={"X-API-Key": key})
    await socket.receive("ready")

    await fetch("/api/auth/forgot-password", method="POST", json={"email": victim.email})
    token = await mailed_token(app, victim.email, "reset-password")
    response = await fetch("/api/auth/reset-password", method="POST",
                           json={"token": token, "password": "Taken-Back-2024?"})
    assert response.code == 200, response.body

    body = assert_error(await fetch("/api/auth/me", headers={"X-API-Key": key}), 401, "UNAUTHORIZED")
    assert body["error"] == "Invalid API key"
    assert (await socket.closed())[0] == 4401
    assert await app.db.run(lambda: ApiKey.select().where(ApiKey.revoked_at.is_null()).count()) == 0
    [row] = await app.db.run(lambda: list(AuditLog.select().where(AuditLog.action == AUTH_PASSWORD_RESET)))
    assert row.details == {"apiKeysRevoked": 1}


@pytest.mark.gen_test
async def test_a_password_change_revokes_api_keys_only_when_asked(app, fetch, make_user):
    user = await make_user()
    kept = await create_key(fetch, user, "ci bot")
    response = await fetch("/api/users/change-password", method="POST", user=user,
                           json={"currentPassword": user.password, "newPassword": "Second-Pass-81?"})
    assert response.code == 200, response.body
    assert response.data == {"sessionsEnded": 0, "apiKeysRevoked": 0}
    assert (await fetch("/api/auth/me", headers={"X-API-Key": kept})).code == 200

    response = await fetch("/api/users/change-password", method="POST", user=user,
                           json={"currentPassword": "Second-Pass-81?", "newPassword": "Third-Pass-92?",
                                 "revokeApiKeys": True})
    assert response.code == 200, response.body
    assert response.data == {"sessionsEnded": 0, "apiKeysRevoked": 1}
    assert_error(await fetch("/api/auth/me", headers={"X-API-Key": kept}), 401, "UNAUTHORIZED")
    assert (await fetch("/api/auth/me", user=user)).code == 200  # the caller's session stays
    body = assert_error(await fetch("/api/users/change-password", method="POST", user=user,
                                    json={"currentPassword": "Third-Pass-92?", "newPassword": "Fourth-Pass-03?",
                                          "revokeApiKeys": "yes"}), 400, "VALIDATION_FAILED")
    assert "revokeApiKeys" in error_fields(body)


# ---------------------------------------------------------------------------
# 8. the failures that wrote no audit row
# ---------------------------------------------------------------------------


async def audit_rows(app, action):
    return await app.db.run(lambda: list(AuditLog.select().where(AuditLog.action == action)))


@pytest.mark.gen_test
async def test_a_wrong_current_password_is_audited(app, fetch, make_user):
    user = await make_user()
    response = await fetch("/api/users/change-password", method="POST", user=user,
                           headers={"User-Agent": "guesser"},
                           json={"currentPassword": "Not-The-One-1!", "newPassword": "Whatever-Pass-5?"})
    assert error_fields(assert_error(response, 400, "VALIDATION_FAILED")) == {"currentPassword": "is incorrect"}
    [row] = await audit_rows(app, AUTH_PASSWORD_CHANGE_FAILED)
    assert (row.user_id, row.actor_id, row.ip, row.user_agent) == (user.id, user.id, "127.0.0.1", "guesser")
    assert row.details == {"reason": "wrong_current_password"}
    assert "Not-The-One" not in json.dumps(row.details)


@pytest.mark.gen_test
async def test_invalid_reset_and_verification_tokens_are_audited(app, fetch):
    token = "T" * 43
    response = await fetch("/api/auth/reset-password", method="POST", headers={"User-Agent": "prober"},
                           json={"token": token, "password": "Whatever-Pass-5?"})
    assert_error(response, 400, "VALIDATION_FAILED")
    response = await fetch("/api/auth/verify-email", method="POST", headers={"User-Agent": "prober"},
                           json={"token": token})
    assert_error(response, 400, "VALIDATION_FAILED")
    for action in (AUTH_PASSWORD_RESET_FAILED, AUTH_EMAIL_VERIFICATION_FAILED):
        [row] = await audit_rows(app, action)
        assert (row.user_id, row.ip, row.user_agent) == (None, "127.0.0.1", "prober")
        assert row.details == {"reason": "invalid_token"}


# ---------------------------------------------------------------------------
# 15. a garbage token is called invalid, the same way on REST and WebSocket
# ---------------------------------------------------------------------------

GARBAGE = "garbage-token-nobody-issued"


@pytest.mark.gen_test
async def test_a_garbage_bearer_token_is_invalid_on_rest(fetch):
    body = assert_error(await fetch("/api/auth/me", headers={"Authorization": f"Bearer {GARBAGE}"}),
                        401, "UNAUTHORIZED")
    assert body["error"] == "Invalid token"
    body = assert_error(await fetch("/api/auth/me", headers={"Authorization": "Bearer eyJhbGciOi.bad.jwt"}),
                        401, "UNAUTHORIZED")
    assert body["error"] == "Invalid token"
    body = assert_error(await fetch("/api/auth/me", headers={"X-API-Key": GARBAGE}), 401, "UNAUTHORIZED")
    assert body["error"] == "Invalid API key"
    body = assert_error(await fetch("/api/auth/me", headers={"Authorization": "Basic dXNlcjpwYXNz"}),
                        401, "UNAUTHORIZED")
    assert "Bearer" in body["error"]
    # Sending nothing is still a different answer.
    assert assert_error(await fetch("/api/auth/me"), 401, "UNAUTHORIZED")["error"] == "Authentication required"


@pytest.mark.gen_test
async def test_a_garbage_bearer_token_is_invalid_on_the_websocket(ws_connect):
    by_header = await ws_connect(headers={"Authorization": f"Bearer {GARBAGE}"})
    assert await by_header.closed() == (4401, "Invalid token")

    by_frame = await ws_connect()
    by_frame.send("auth", {"token": GARBAGE}, id="a1")
    error = await by_frame.receive("error")
    assert error["data"] == {"code": "UNAUTHORIZED", "message": "Invalid token"}
    assert await by_frame.closed() == (4401, "Invalid token")

    by_key = await ws_connect(headers={"X-API-Key": GARBAGE})
    assert await by_key.closed() == (4401, "Invalid API key")


# ---------------------------------------------------------------------------
# 18. only failed sign-ins count against the login limits
# ---------------------------------------------------------------------------

LOGIN_LIMIT = pytest.mark.vachat(config={"rate_limit_auth": "5/900s"})


@LOGIN_LIMIT
@pytest.mark.gen_test
async def test_successful_sign_ins_do_not_count(fetch, make_user):
    user = await make_user()
    for _ in range(10):
        assert (await login(fetch, user.email, user.password)).code == 200


@LOGIN_LIMIT
@pytest.mark.gen_test
async def test_five_failures_lock_the_account_and_successes_do_not_refill_it(fetch, make_user):
    user = await make_user()
    for _ in range(4):
        assert_error(await login(fetch, user.email, "Wrong-Guess-77!"), 401, "UNAUTHORIZED")
    assert (await login(fetch, user.email, user.password)).code == 200  # gives back only its own
    assert_error(await login(fetch, user.email, "Wrong-Guess-77!"), 401, "UNAUTHORIZED")
    locked = await login(fetch, user.email, user.password)
    assert_error(locked, 429, "RATE_LIMITED")
    assert int(locked.headers["Retry-After"]) >= 1


@LOGIN_LIMIT
@pytest.mark.gen_test
async def test_concurrent_guesses_cannot_outrun_the_limit(fetch, make_user):
    user = await make_user()
    answers = await asyncio.gather(*(login(fetch, user.email, f"Wrong-Guess-{n}!") for n in range(12)))
    assert sorted(answer.code for answer in answers) == [401] * 5 + [429] * 7


@LOGIN_LIMIT
@pytest.mark.gen_test
async def test_register_forgot_and_reset_count_every_attempt(fetch, make_user):
    user = await make_user()
    for _ in range(5):
        assert (await fetch("/api/auth/forgot-password", method="POST", json={"email": user.email})).code == 200
    assert_error(await fetch("/api/auth/forgot-password", method="POST", json={"email": user.email}),
                 429, "RATE_LIMITED")
    for number in range(5):
        assert (await fetch("/api/auth/register", method="POST",
                            json={"email": f"new{number}@example.test", "password": "Brand-New-Pass-8?"})).code == 201
    assert_error(await fetch("/api/auth/register", method="POST",
                             json={"email": "new9@example.test", "password": "Brand-New-Pass-8?"}), 429, "RATE_LIMITED")


# ---------------------------------------------------------------------------
# 13. no error echoes a password, token or key
# ---------------------------------------------------------------------------

LONG_SECRET = "Sup3r-Secret-" + "q" * 1100


@pytest.mark.parametrize("path, body, field", [
    ("/api/auth/register", {"email": "long@example.test", "password": LONG_SECRET}, "password"),
    ("/api/auth/login", {"email": "long@example.test", "password": LONG_SECRET}, "password"),
    ("/api/auth/reset-password", {"token": "T" * 43, "password": LONG_SECRET}, "password"),
    ("/api/auth/reset-password", {"token": "Sup3r-Secret token!", "password": "Fine-Pass-42?"}, "token"),
    ("/api/auth/reset-password", {"token": LONG_SECRET, "password": "Fine-Pass-42?"}, "token"),
    ("/api/auth/verify-email", {"token": LONG_SECRET}, "token"),
    ("/api/auth/refresh", {"refreshToken": "Sup3r-Secret-" + "r" * 5000}, "refreshToken"),
])
@pytest.mark.gen_test
async def test_validation_errors_never_echo_a_secret(fetch, path, body, field):
    response = await fetch(path, method="POST", json=body)
    error = assert_error(response, 400, "VALIDATION_FAILED")
    assert field in error_fields(error)
    assert b"Sup3r-Secret" not in response.body and b"qqqq" not in response.body


@pytest.mark.gen_test
async def test_a_change_password_error_never_echoes_either_password(fetch, make_user):
    user = await make_user()
    response = await fetch("/api/users/change-password", method="POST", user=user,
                           json={"currentPassword": LONG_SECRET, "newPassword": LONG_SECRET + "x"})
    fields = error_fields(assert_error(response, 400, "VALIDATION_FAILED"))
    assert fields == {"currentPassword": "must be at most 1024 characters long",
                      "newPassword": "must be at most 1024 characters long"}
    assert b"Sup3r-Secret" not in response.body
