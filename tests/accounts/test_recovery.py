"""Password reset and e-mail verification through the real server: no enumeration,
single-use expiring superseded tokens, every session ended by a reset, rate limits."""

from __future__ import annotations

import datetime
import re

import pytest

from vachat.accounts.audit import AUTH_EMAIL_VERIFIED, AUTH_PASSWORD_RESET, AUTH_PASSWORD_RESET_REQUESTED
from vachat.accounts.models import AuditLog, EmailVerification, PasswordReset, User
from vachat.db import now
from vachat.testing import assert_error, error_fields, login

NEW_PASSWORD = "Fresh-Start-42?"
LIMITED = pytest.mark.vachat(config={"rate_limit_auth": "2/900s"})


async def forgot(fetch, email, **kwargs):
    return await fetch("/api/auth/forgot-password", method="POST", json={"email": email}, **kwargs)


async def mailed_token(app, email: str, kind: str = "reset-password") -> str:
    """The token in the next mail to ``email`` (the mail job may still be running)."""
    await app.mailer.drain()
    message = await app.mailer.outbox.receive(to=email)
    match = re.search(rf"{re.escape(app.config.public_url)}/{kind}/([A-Za-z0-9_-]+)", message.text)
    assert match, message.text
    assert match.group(0) in message.html
    return match.group(1)


async def reset(fetch, token, password=NEW_PASSWORD, **kwargs):
    return await fetch("/api/auth/reset-password", method="POST", json={"token": token, "password": password}, **kwargs)


async def audit_rows(app, action):
    return await app.db.run(lambda: list(AuditLog.select().where(AuditLog.action == action)
                                         .order_by(AuditLog.created_at).dicts()))


# ---------------------------------------------------------------------------
# forgot-password
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_forgot_password_answers_the_same_for_known_and_unknown_addresses(app, fetch, make_user):
    user = await make_user(email="known@example.com")
    known = await forgot(fetch, "Known@Example.com")
    unknown = await forgot(fetch, "nobody@example.com")
    assert known.code == unknown.code == 200
    assert known.body == unknown.body
    assert known.json["data"] is None and "If an account exists" in known.json["message"]
    assert known.headers.get("Retry-After") is None and unknown.headers.get("Retry-After") is None

    await app.mailer.drain()
    assert [m.to for m in app.mailer.outbox.messages] == [user.email]
    # Both requests are in the audit log, telling an administrator what the caller cannot learn.
    rows = await audit_rows(app, AUTH_PASSWORD_RESET_REQUESTED)
    # The two background jobs may finish in either order.
    assert sorted(((r["user_id"] or ""), r["details"]["accountFound"]) for r in rows) == [("", False), (user.id, True)]
    assert all(r["ip"] == "127.0.0.1" for r in rows)


@pytest.mark.gen_test
async def test_forgot_password_for_a_disabled_account_sends_nothing(app, fetch, make_user):
    user = await make_user(is_active=False)
    response = await forgot(fetch, user.email)
    assert response.code == 200
    await app.mailer.drain()
    assert app.mailer.outbox.to(user.email) == []


@pytest.mark.gen_test
async def test_forgot_password_validates_its_body(fetch):
    assert set(error_fields(assert_error(await forgot(fetch, "not-an-address"), 400, "VALIDATION_FAILED"))) == {"email"}
    body = assert_error(await fetch("/api/auth/forgot-password", method="POST",
                                    json={"email": "a@example.com", "admin": True}), 400, "VALIDATION_FAILED")
    assert error_fields(body) == {"admin": "is not an allowed field"}


@pytest.mark.gen_test
async def test_tokens_are_stored_hashed(app, fetch, make_user):
    user = await make_user()
    await forgot(fetch, user.email)
    token = await mailed_token(app, user.email)
    stored = await app.db.run(lambda: [row.token_hash for row in PasswordReset.select()])
    assert len(stored) == 1 and token not in stored[0] and len(stored[0]) == 64


# ---------------------------------------------------------------------------
# reset-password
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_reset_sets_the_password_once(app, fetch, make_user):
    user = await make_user()
    await forgot(fetch, user.email)
    token = await mailed_token(app, user.email)

    response = await reset(fetch, token, headers={"User-Agent": "reset-test"})
    assert response.code == 200, response.body
    assert response.json["data"] is None
    assert (await login(fetch, user.email, NEW_PASSWORD)).code == 200
    assert_error(await login(fetch, user.email, user.password), 401, "UNAUTHORIZED")

    again = assert_error(await reset(fetch, token, "Another-Pass-77%"), 400, "VALIDATION_FAILED")
    assert error_fields(again) == {"token": "is invalid or has expired"}
    assert (await login(fetch, user.email, NEW_PASSWORD)).code == 200

    [row] = await audit_rows(app, AUTH_PASSWORD_RESET)
    assert (row["user_id"], row["ip"], row["user_agent"]) == (user.id, "127.0.0.1", "reset-test")


@pytest.mark.gen_test
async def test_unknown_and_malformed_tokens_are_refused(fetch):
    assert error_fields(assert_error(await reset(fetch, "x" * 43), 400, "VALIDATION_FAILED")) == {
        "token": "is invalid or has expired"}
    assert "token" in error_fields(assert_error(await reset(fetch, "short"), 400, "VALIDATION_FAILED"))
    assert "token" in error_fields(assert_error(await reset(fetch, "bad token with spaces!"), 400, "VALIDATION_FAILED"))


@pytest.mark.gen_test
async def test_expired_token_is_refused(app, fetch, make_user):
    user = await make_user()
    await forgot(fetch, user.email)
    token = await mailed_token(app, user.email)
    # Move the token's expiry into the past instead of waiting an hour.
    await app.db.run(lambda: PasswordReset.update(expires_at=now() - datetime.timedelta(seconds=1)).execute())
    assert error_fields(assert_error(await reset(fetch, token), 400, "VALIDATION_FAILED")) == {
        "token": "is invalid or has expired"}
    assert (await login(fetch, user.email, user.password)).code == 200


@pytest.mark.gen_test
async def test_a_newer_token_supersedes_older_ones(app, fetch, make_user):
    user = await make_user()
    await forgot(fetch, user.email)
    first = await mailed_token(app, user.email)
    await forgot(fetch, user.email)
    second = await mailed_token(app, user.email)
    assert first != second
    assert_error(await reset(fetch, first), 400, "VALIDATION_FAILED")
    assert (await reset(fetch, second)).code == 200


@pytest.mark.gen_test
async def test_policy_is_checked_before_the_token_is_spent(app, fetch, make_user):
    user = await make_user()
    await forgot(fetch, user.email)
    token = await mailed_token(app, user.email)

    weak = error_fields(assert_error(await reset(fetch, token, "short"), 400, "VALIDATION_FAILED"))
    assert set(weak) == {"password"}
    # The 72-byte rule: 73 bytes that otherwise meet the policy are refused, never truncated.
    too_long = "Aa1!" + "é" * 34 + "x"  # 4 + 68 + 1 = 73 bytes
    assert len(too_long.encode()) == 73
    body = assert_error(await reset(fetch, token, too_long), 400, "VALIDATION_FAILED")
    assert error_fields(body) == {"password": "must be at most 72 bytes (UTF-8)"}

    assert (await reset(fetch, token)).code == 200  # the same token still works once


@pytest.mark.gen_test
async def test_reset_ends_every_session_and_closes_sockets(app, fetch, make_user, ws_connect):
    user = await make_user()
    second = await login(fetch, user.email, user.password)
    second_headers = {"Authorization": f"Bearer {second.json['data']['tokens']['accessToken']}"}
    socket = await ws_connect(user=user)
    await socket.receive("ready")
    assert (await fetch("/api/users/profile", user=user)).code == 200

    await forgot(fetch, user.email)
    assert (await reset(fetch, await mailed_token(app, user.email))).code == 200

    code, _ = await socket.closed()
    assert code == 4401
    assert_error(await fetch("/api/users/profile", user=user), 401, "UNAUTHORIZED")
    assert_error(await fetch("/api/users/profile", headers=second_headers), 401, "UNAUTHORIZED")
    refreshed = await fetch("/api/auth/refresh", method="POST", json={"refreshToken": user.refresh_token})
    assert_error(refreshed, 401, "UNAUTHORIZED")


@pytest.mark.gen_test
async def test_reset_for_an_account_disabled_since_is_refused(app, fetch, make_user):
    user = await make_user()
    await forgot(fetch, user.email)
    token = await mailed_token(app, user.email)
    await app.db.run(lambda: User.update(is_active=False).where(User.id == user.id).execute())
    assert_error(await reset(fetch, token), 400, "VALIDATION_FAILED")


# ---------------------------------------------------------------------------
# e-mail verification
# ---------------------------------------------------------------------------


async def register(fetch, email):
    response = await fetch("/api/auth/register", method="POST", json={
        "email": email, "password": "Sturdy-Passw0rd!", "firstName": "Vera"})
    assert response.code == 201, response.body
    tokens = response.json["data"]["tokens"]
    return {"Authorization": f"Bearer {tokens['accessToken']}"}


async def verify(fetch, token):
    return await fetch("/api/auth/verify-email", method="POST", json={"token": token})


@pytest.mark.gen_test
async def test_registration_mails_a_link_that_verifies_once(app, fetch):
    headers = await register(fetch, "vera@example.com")
    message_token = await mailed_token(app, "vera@example.com", "verify-email")
    assert (await fetch("/api/users/profile", headers=headers)).json["data"]["isEmailVerified"] is False

    response = await verify(fetch, message_token)
    assert response.code == 200, response.body
    assert response.json["data"] == {"emailVerified": True, "sent": False}
    app.schemas.validate("core/auth/email-verification-status", response.json["data"])
    assert (await fetch("/api/users/profile", headers=headers)).json["data"]["isEmailVerified"] is True
    assert (await fetch("/api/auth/me", headers=headers)).json["data"]["isEmailVerified"] is True

    assert error_fields(assert_error(await verify(fetch, message_token), 400, "VALIDATION_FAILED")) == {
        "token": "is invalid or has expired"}
    [row] = await audit_rows(app, AUTH_EMAIL_VERIFIED)
    assert row["details"] == {"email": "vera@example.com"}


@pytest.mark.gen_test
async def test_resend_supersedes_the_old_link(app, fetch):
    headers = await register(fetch, "wes@example.com")
    old = await mailed_token(app, "wes@example.com", "verify-email")
    response = await fetch("/api/auth/resend-verification", method="POST", headers=headers)
    assert response.code == 200, response.body
    assert response.json["data"] == {"emailVerified": False, "sent": True}
    new = await mailed_token(app, "wes@example.com", "verify-email")
    assert_error(await verify(fetch, old), 400, "VALIDATION_FAILED")
    assert (await verify(fetch, new)).code == 200

    # Once verified there is nothing to resend.
    done = await fetch("/api/auth/resend-verification", method="POST", headers=headers)
    assert done.code == 200 and done.json["data"] == {"emailVerified": True, "sent": False}
    await app.mailer.drain()
    assert app.mailer.outbox.to("wes@example.com") == []


@pytest.mark.gen_test
async def test_resend_needs_a_signed_in_user(fetch):
    assert_error(await fetch("/api/auth/resend-verification", method="POST"), 401, "UNAUTHORIZED")


@pytest.mark.gen_test
async def test_expired_verification_token_is_refused(app, fetch):
    await register(fetch, "xia@example.com")
    token = await mailed_token(app, "xia@example.com", "verify-email")
    await app.db.run(lambda: EmailVerification.update(expires_at=now() - datetime.timedelta(seconds=1)).execute())
    assert_error(await verify(fetch, token), 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
async def test_a_link_for_a_former_address_proves_nothing(app, fetch):
    await register(fetch, "yan@example.com")
    token = await mailed_token(app, "yan@example.com", "verify-email")
    await app.db.run(lambda: User.update(email="yan-new@example.com").where(User.email == "yan@example.com").execute())
    assert_error(await verify(fetch, token), 400, "VALIDATION_FAILED")


# ---------------------------------------------------------------------------
# rate limits (RATE_LIMIT_AUTH = 2 per 15 minutes here)
# ---------------------------------------------------------------------------


@LIMITED
@pytest.mark.gen_test
async def test_forgot_password_is_limited_per_address(fetch, make_user):
    user = await make_user()
    for email in (user.email, "other@example.com"):
        assert (await forgot(fetch, email)).code == 200
    assert_error(await forgot(fetch, "third@example.com"), 429, "RATE_LIMITED")
    assert int((await forgot(fetch, user.email)).headers["Retry-After"]) > 0
    # Without a trusted proxy, X-Forwarded-For is the client's word and changes nothing.
    spoofed = await forgot(fetch, "fourth@example.com", headers={"X-Forwarded-For": "198.51.100.7"})
    assert_error(spoofed, 429, "RATE_LIMITED")


@pytest.mark.vachat(config={"rate_limit_auth_account": "2/900s", "trusted_proxies": ["127.0.0.1/32"]})
@pytest.mark.gen_test
async def test_forgot_password_is_limited_per_account_known_or_not(app, fetch, make_user):
    user = await make_user()
    for email in (user.email, "ghost@example.com"):
        answers = []
        for hop in range(3):  # each from its own client address behind the trusted proxy
            answers.append(await forgot(fetch, email.upper(), headers={"X-Forwarded-For": f"203.0.113.{hop + 1}"}))
        assert [a.code for a in answers] == [200, 200, 429]
        assert "Retry-After" in answers[2].headers
    # The limited answers are identical too: the limit tells nothing about the account.
    await app.mailer.drain()
    assert len(app.mailer.outbox.to(user.email)) == 2


@LIMITED
@pytest.mark.gen_test
async def test_reset_password_is_limited_per_address(fetch):
    for _ in range(2):
        assert_error(await reset(fetch, "z" * 43), 400, "VALIDATION_FAILED")
    limited = await reset(fetch, "z" * 43)
    assert_error(limited, 429, "RATE_LIMITED")
    assert int(limited.headers["Retry-After"]) > 0


@pytest.mark.vachat(config={"rate_limit_auth": "2/900s", "trusted_proxies": ["127.0.0.1/32"]})
@pytest.mark.gen_test
async def test_reset_password_is_limited_per_account(app, fetch, make_user):
    user = await make_user()
    await forgot(fetch, user.email, headers={"X-Forwarded-For": "203.0.113.50"})
    token = await mailed_token(app, user.email)
    for hop in range(2):
        assert_error(await reset(fetch, token, "weak", headers={"X-Forwarded-For": f"203.0.113.{hop + 1}"}),
                     400, "VALIDATION_FAILED")
    limited = await reset(fetch, token, headers={"X-Forwarded-For": "203.0.113.9"})
    assert_error(limited, 429, "RATE_LIMITED")
    assert int(limited.headers["Retry-After"]) > 0


@LIMITED
@pytest.mark.gen_test
async def test_resend_verification_is_limited_per_user(app, fetch):
    headers = await register(fetch, "zed@example.com")
    for _ in range(2):
        assert (await fetch("/api/auth/resend-verification", method="POST", headers=headers)).code == 200
    assert_error(await fetch("/api/auth/resend-verification", method="POST", headers=headers), 429, "RATE_LIMITED")


@pytest.mark.gen_test
async def test_openapi_documents_the_routes(fetch):
    paths = (await fetch("/api/openapi.json")).json["paths"]
    for path in ("forgot-password", "reset-password", "verify-email"):
        assert path in str(paths[f"/api/auth/{path}"]["post"]["requestBody"])
    assert "email-verification-status" in str(paths["/api/auth/resend-verification"]["post"]["responses"])
