"""Password reset and e-mail verification: one-time tokens sent by e-mail.

Routes (``ROUTES``, included by the accounts plugin):

- ``POST /api/auth/forgot-password`` ``{email}`` — always the same 200 answer. The handler only
  validates, counts the attempt (RATE_LIMIT_AUTH per address and per account) and hands the
  rest to a background mail job *before* answering; nothing it does depends on whether the
  account exists, so the body, the status and the time of the answer are the same for known
  and unknown addresses. The job itself does the same shape of work for both (the lookup,
  a transaction that supersedes older tokens and writes an audit row), plus, for a known
  active account, the token row and the e-mail.
- ``POST /api/auth/reset-password`` ``{token, password}`` — rate limited like forgot-password;
  the token must be unused, unexpired and the newest one of its user (issuing a token marks the
  older ones used); the new password passes the policy before the token is spent; the token
  is spent, the password set, every API key of the user revoked and the audit row written in
  one transaction; then every session of the user ends (tokens refused, sockets closed). The
  reset does not sign anyone in.
- ``POST /api/auth/verify-email`` ``{token}`` — marks the address verified; single use.
- ``POST /api/auth/resend-verification`` — for the signed-in caller only (no body): a signed-in
  user already knows their own address, so there is nothing to enumerate, and no form lets a
  stranger mail-bomb someone else's inbox. Limited per account at RATE_LIMIT_AUTH.

Tokens are 256 random bits (``secrets.token_urlsafe``); only their SHA-256 is stored, so a
database leak yields no usable link. Links are ``{PUBLIC_URL}/reset-password/<token>`` and
``{PUBLIC_URL}/verify-email/<token>``, vachat's own minimal pages (``pages``), unless
``EMAIL_RESET_URL`` / ``EMAIL_VERIFY_URL`` point them at a front end, which posts the token
back here.

``send_verification_email(app, user)`` is what registration calls.

This module must never tell a caller whether an address has an account, never store or log
a token in clear, and never make a request wait for SMTP.
"""

from __future__ import annotations

import datetime
import hashlib
import html
import logging
import secrets
from typing import Any

from ..db import database, now
from ..errors import RateLimited, Unauthorized, ValidationFailed
from ..web import ApiHandler, endpoint
from .audit import (
    AUTH_EMAIL_VERIFICATION_FAILED, AUTH_EMAIL_VERIFIED, AUTH_PASSWORD_RESET, AUTH_PASSWORD_RESET_FAILED,
    AUTH_PASSWORD_RESET_REQUESTED, audit, record, request_origin,
)
from .apikeys import forget_revoked_api_keys, revoke_user_api_key_rows
from .limits import account_key, check_auth_limits
from .models import EmailVerification, PasswordReset, User, normalize_email
from .passwords import check_policy, hash_password
from .sessions import invalidate_user, revoke_user_sessions

__all__ = [
    "ROUTES", "send_verification_email", "issue_password_reset", "new_token", "hash_token",
    "reset_password", "verify_email", "PASSWORD_RESET_MESSAGE", "EMAIL_VERIFIED_MESSAGE",
    "RESET_TOKEN_TTL", "VERIFICATION_TOKEN_TTL", "FORGOT_PASSWORD_MESSAGE",
]

log = logging.getLogger("vachat.accounts.recovery")

# A reset link is a password in transit: one hour is enough to read the mail and act on it,
# and short enough that an old message found in a mailbox later is useless.
RESET_TOKEN_TTL = datetime.timedelta(hours=1)
# Verification only proves the address; people sign up and read mail the next day.
VERIFICATION_TOKEN_TTL = datetime.timedelta(hours=48)
# Random bytes per token: 256 bits, beyond any online or offline guessing.
TOKEN_BYTES = 32

FORGOT_PASSWORD_MESSAGE = ("If an account exists for that address, we have sent it a link to reset "
                           "the password. The link expires in 1 hour.")
INVALID_TOKEN_MESSAGE = "This link is invalid or has expired; ask for a new one"
PASSWORD_RESET_MESSAGE = "Your password has been reset. Sign in with the new one."
EMAIL_VERIFIED_MESSAGE = "Your e-mail address is verified."
# Neither message greets by name: whoever registers or asks for a reset chooses the address it
# goes to, and the name on the account would be their text in someone else's inbox.
GREETING = "Hello,"


def new_token() -> tuple[str, str]:
    """A fresh one-time token and the hash to store: ``(token, sha256 hex)``."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _invalid_token() -> ValidationFailed:
    return ValidationFailed(INVALID_TOKEN_MESSAGE, details=[{"field": "token", "message": "is invalid or has expired"}])


def _link(app: Any, path: str, token: str) -> str:
    """The mailed link: the configured front-end template (``EMAIL_VERIFY_URL`` /
    ``EMAIL_RESET_URL``, ``{token}`` replaced), else vachat's own page under ``PUBLIC_URL``."""
    template = {"verify-email": app.config.email_verify_url, "reset-password": app.config.email_reset_url}[path]
    if template:
        return template.replace("{token}", token)
    return f"{app.config.public_url.rstrip('/')}/{path}/{token}"


def _mail_bodies(greeting: str, paragraphs: list[str], link: str, action: str) -> tuple[str, str]:
    """The plain-text and HTML bodies of a message with one link."""
    text = "\n\n".join([greeting, *paragraphs[:1], link, *paragraphs[1:]]) + "\n"
    escaped = html.escape(link, quote=True)
    rich = "".join([
        f"<p>{html.escape(greeting)}</p>",
        *(f"<p>{html.escape(p)}</p>" for p in paragraphs[:1]),
        f'<p><a href="{escaped}">{html.escape(action)}</a></p><p>{escaped}</p>',
        *(f"<p>{html.escape(p)}</p>" for p in paragraphs[1:]),
    ])
    return text, rich


# ---------------------------------------------------------------------------
# password reset
# ---------------------------------------------------------------------------


def _store_reset(email: str, token_hash: str, ip: str | None, user_agent: str | None) -> str | None:
    """Synchronous (``app.db.run``): supersede the user's open reset tokens, store the new
    one, write the audit row. Returns the address of a known active account, else None
    after doing the same shape of work."""
    moment = now()
    with database.atomic():  # IMMEDIATE on SQLite (see vachat.db)
        user = User.by_email(email)
        known = user is not None and user.is_active
        # An unknown address runs the same supersede statement; it matches no row.
        (PasswordReset.update(used_at=moment)
         .where(PasswordReset.user == (user.id if known else ""), PasswordReset.used_at.is_null())
         .execute())
        if known:
            PasswordReset.create(user=user.id, token_hash=token_hash, ip=(ip or "")[:64],
                                 created_at=moment, expires_at=moment + RESET_TOKEN_TTL)
        record(AUTH_PASSWORD_RESET_REQUESTED, user_id=user.id if known else None, ip=ip, user_agent=user_agent,
               details={"accountFound": known})
    return user.email if known else None


async def issue_password_reset(app: Any, email: str, *, ip: str | None = None,
                               user_agent: str | None = None) -> bool:
    """Issue a reset token for ``email`` and mail the link, if it names an active account.
    Returns whether a message was handed to the mailer. Runs as a background mail job."""
    token, token_hash = new_token()
    address = await app.db.run(_store_reset, normalize_email(email), token_hash, ip, user_agent)
    if address is None:
        return False
    link = _link(app, "reset-password", token)
    text, rich = _mail_bodies(
        GREETING,
        ["Someone (hopefully you) asked to reset the password of your account. "
         "Open this link within 1 hour to choose a new one:",
         "If you did not ask for this, ignore this message: your password stays as it is. "
         "Resetting it signs you out everywhere."],
        link, "Choose a new password")
    return await app.mailer.send(address, "Reset your password", text, rich)


def _find_reset(token_hash: str) -> tuple[str, str, str] | None:
    """(reset id, user id, user e-mail) of a usable token, else None."""
    moment = now()
    row = (PasswordReset.select(PasswordReset.id, User.id.alias("uid"), User.email.alias("address"))
           .join(User)
           .where(PasswordReset.token_hash == token_hash, PasswordReset.used_at.is_null(),
                  PasswordReset.expires_at > moment, User.is_active == True)  # noqa: E712 (SQL)
           .dicts().first())
    return (row["id"], row["uid"], row["address"]) if row else None


def _apply_reset(reset_id: str, user_id: str, password_hash: str, ip: str | None,
                 user_agent: str | None) -> list[tuple[str, str]] | None:
    """Spend the token, set the password and revoke the user's API keys in one transaction.
    Returns the keys revoked, or None when the token was spent (or expired) meanwhile: two
    concurrent resets with one token, only one wins."""
    moment = now()
    with database.atomic():  # IMMEDIATE on SQLite (see vachat.db)
        spent = (PasswordReset.update(used_at=moment)
                 .where(PasswordReset.id == reset_id, PasswordReset.used_at.is_null(),
                        PasswordReset.expires_at > moment)
                 .execute())
        if spent != 1:
            return None
        User.update(password_hash=password_hash, updated_at=moment).where(User.id == user_id).execute()
        # Any other link still open for this user dies with this reset.
        (PasswordReset.update(used_at=moment)
         .where(PasswordReset.user == user_id, PasswordReset.used_at.is_null()).execute())
        # A reset is how a victim takes an account back: a key the intruder minted while they
        # held it must not outlive the recovery.
        revoked = revoke_user_api_key_rows(user_id)
        record(AUTH_PASSWORD_RESET, user_id=user_id, actor_id=user_id, ip=ip, user_agent=user_agent,
               details={"apiKeysRevoked": len(revoked)})
    return revoked


class ForgotPasswordHandler(ApiHandler):
    @endpoint("Ask for a password-reset e-mail", body="core/auth/forgot-password", auth=False,
              tags=("auth",), errors=(400, 429),
              description="Always answers the same, whether or not the address has an account. "
                          "When it has, a link to `{PUBLIC_URL}/reset-password/<token>` is e-mailed; "
                          "the token is valid for 1 hour, once.")
    async def post(self) -> None:
        email = self.body["email"]
        await check_auth_limits(self, email)
        ip, user_agent = request_origin(self)
        # Everything that depends on the account happens after the answer is decided.
        self.application.mailer.run_in_background(
            issue_password_reset(self.application, email, ip=ip, user_agent=user_agent))
        self.respond(None, message=FORGOT_PASSWORD_MESSAGE)


class ResetPasswordHandler(ApiHandler):
    @endpoint("Set a new password with a reset token", body="core/auth/reset-password", auth=False,
              tags=("auth",), errors=(400, 429),
              description="The token from the e-mail works once, within 1 hour, and only if no newer "
                          "one was requested. Every session of the account ends and every API key "
                          "of the account is revoked; sign in again.")
    async def post(self) -> None:
        await reset_password(self, self.body["token"], self.body["password"])
        self.respond(None, message=PASSWORD_RESET_MESSAGE)


async def reset_password(handler: Any, token: str, password: str) -> None:
    """Set ``password`` with a reset ``token`` on behalf of ``handler``'s caller (the REST
    endpoint and the reset page alike): rate limited, policy checked before the token is
    spent, then every session ended and every API key revoked. Raises ``ValidationFailed``
    (bad token or password) or ``RateLimited``."""
    app = handler.application
    await check_auth_limits(handler, None, action="reset-password")
    found = await app.db.run(_find_reset, hash_token(token))
    if found is None:
        await audit(app, handler, AUTH_PASSWORD_RESET_FAILED, details={"reason": "invalid_token"})
        raise _invalid_token()
    reset_id, user_id, address = found
    decision = await app.limiter.hit(f"auth:reset-password:account:{account_key(address)}",
                                     app.config.rate_limit_auth)
    if not decision.allowed:
        raise RateLimited("Too many attempts for this account; try again later",
                          retry_after=decision.retry_after)
    check_policy(password, email=address)  # before the token is spent: a retry can fix it
    password_hash = await hash_password(app, password)
    ip, user_agent = request_origin(handler)
    revoked = await app.db.run(_apply_reset, reset_id, user_id, password_hash, ip, user_agent)
    if revoked is None:  # spent by a concurrent reset with the same token
        await audit(app, handler, AUTH_PASSWORD_RESET_FAILED, user_id=user_id, details={"reason": "invalid_token"})
        raise _invalid_token()
    await forget_revoked_api_keys(app, revoked)
    ended = await revoke_user_sessions(app, user_id, reason="password_reset")
    log.info("password reset", extra={"userId": user_id, "sessionsEnded": ended, "apiKeysRevoked": len(revoked)})


# ---------------------------------------------------------------------------
# e-mail verification
# ---------------------------------------------------------------------------


def _store_verification(user_id: str, email: str, token_hash: str) -> None:
    moment = now()
    with database.atomic():  # IMMEDIATE on SQLite (see vachat.db)
        (EmailVerification.update(used_at=moment)
         .where(EmailVerification.user == user_id, EmailVerification.used_at.is_null()).execute())
        EmailVerification.create(user=user_id, email=email, token_hash=token_hash, created_at=moment,
                                 expires_at=moment + VERIFICATION_TOKEN_TTL)


async def send_verification_email(app: Any, user: User) -> None:
    """Issue a verification token for ``user``'s current address (superseding older ones)
    and mail the link in the background. The caller does not wait for SMTP."""
    token, token_hash = new_token()
    await app.db.run(_store_verification, user.id, user.email, token_hash)
    text, rich = _mail_bodies(
        GREETING,
        ["Please confirm that this is your e-mail address by opening this link (valid for 48 hours):",
         "If you did not create an account, ignore this message."],
        _link(app, "verify-email", token), "Confirm my address")
    app.mailer.send_soon(user.email, "Confirm your e-mail address", text, rich)


def _apply_verification(token_hash: str, ip: str | None, user_agent: str | None) -> str | None:
    """Spend a usable token and mark its address verified. Returns the user id, or None."""
    moment = now()
    with database.atomic():  # IMMEDIATE on SQLite (see vachat.db)
        row = (EmailVerification.select(EmailVerification, User).join(User)
               .where(EmailVerification.token_hash == token_hash, EmailVerification.used_at.is_null(),
                      EmailVerification.expires_at > moment)
               .first())
        # A token proves the address it was sent to; if the account's address changed since,
        # it proves nothing about the current one.
        if row is None or normalize_email(row.email) != row.user.email:
            return None
        spent = (EmailVerification.update(used_at=moment)
                 .where(EmailVerification.id == row.id, EmailVerification.used_at.is_null()).execute())
        if spent != 1:
            return None
        User.update(is_email_verified=True, updated_at=moment).where(User.id == row.user.id).execute()
        record(AUTH_EMAIL_VERIFIED, user_id=row.user.id, actor_id=row.user.id, ip=ip, user_agent=user_agent,
               details={"email": row.user.email})
        return row.user.id


class VerifyEmailHandler(ApiHandler):
    @endpoint("Confirm an e-mail address with the token sent to it", body="core/auth/verify-email",
              response="core/auth/email-verification-status", auth=False, tags=("auth",), errors=(400,))
    async def post(self) -> None:
        await verify_email(self, self.body["token"])
        self.respond({"emailVerified": True, "sent": False}, message=EMAIL_VERIFIED_MESSAGE)


async def verify_email(handler: Any, token: str) -> str:
    """Spend a verification ``token`` on behalf of ``handler``'s caller (the REST endpoint and
    the verification page alike). Returns the user id; ``ValidationFailed`` for a bad token."""
    app = handler.application
    ip, user_agent = request_origin(handler)
    user_id = await app.db.run(_apply_verification, hash_token(token), ip, user_agent)
    if user_id is None:
        await audit(app, handler, AUTH_EMAIL_VERIFICATION_FAILED, ip=ip, user_agent=user_agent,
                    details={"reason": "invalid_token"})
        raise _invalid_token()
    await invalidate_user(app, user_id)
    return user_id


class ResendVerificationHandler(ApiHandler):
    @endpoint("Send the signed-in user a new verification e-mail",
              response="core/auth/email-verification-status", tags=("auth",), errors=(401, 429),
              description="For the caller's own address; older links stop working. Does nothing "
                          "(`sent: false`) when the address is already verified.")
    async def post(self) -> None:
        app = self.application
        user = await app.db.run(User.get_or_none, User.id == self.actor.id)
        if user is None:  # deleted since the credential was cached
            raise Unauthorized()
        if user.is_email_verified:
            self.respond({"emailVerified": True, "sent": False},
                         message="Your e-mail address is already verified.")
            return
        decision = await app.limiter.hit(f"auth:resend-verification:user:{user.id}", app.config.rate_limit_auth)
        if not decision.allowed:
            raise RateLimited("Too many verification e-mails; try again later", retry_after=decision.retry_after)
        await send_verification_email(app, user)
        self.respond({"emailVerified": False, "sent": True}, message="A new verification link is on its way.")


ROUTES: list[tuple[str, type]] = [
    (r"/api/auth/forgot-password", ForgotPasswordHandler),
    (r"/api/auth/reset-password", ResetPasswordHandler),
    (r"/api/auth/verify-email", VerifyEmailHandler),
    (r"/api/auth/resend-verification", ResendVerificationHandler),
]
