"""The ``/api/auth`` routes: register, login, logout, refresh, me, sessions, API keys.

(forgot-password, reset-password, verify-email and resend-verification live in ``recovery``.)

Sign-in answers ``{user, tokens, sessionId}``. Login failures are one indistinguishable 401
whether the address is unknown or the password wrong (the same bcrypt work either way); only
a caller who proved the password learns that the account is disabled (403). Sessions and
API keys are only ever looked up together with their owner, so another user's id is a 404,
exactly like an id that does not exist. Managing sessions and API keys needs a signed-in
session: an API key cannot mint or revoke keys (a leaked key must not be able to entrench
itself).

This module must never answer with a password hash, a stored token hash, or an API key other
than in the one creation response, and never put secrets in the audit log.
"""

from __future__ import annotations

import datetime
import importlib
import logging
from typing import Any

from ..db import now
from ..errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from ..web import ApiHandler, endpoint
from . import apikeys, audit, sessions
from .commands import EMAIL_PATTERN, ensure_default_roles
from .identity import clean_name, identifier_problem, normalize_username
from .limits import check_auth_limits
from .models import (
    DEFAULT_ROLE, EMAIL_MAX_LENGTH, ApiKey, Role, Session, User, normalize_email,
)
from .passwords import check_policy, hash_password, verify_password
from .profile import is_timezone
from .tokens import refresh_ttl as session_ttl, token_pair
from .users import create_account

__all__ = ["ROUTES", "RegisterHandler", "LoginHandler", "LogoutHandler", "RefreshHandler", "MeHandler",
           "SessionsHandler", "SessionHandler", "ApiKeysHandler", "ApiKeyHandler"]

log = logging.getLogger("vachat.accounts.auth")

TAGS = ("auth",)
_ID = r"(?P<item_id>[A-Za-z0-9:_-]{1,64})"


def user_agent_of(handler: ApiHandler) -> str:
    return handler.request.headers.get("User-Agent", "")


def _require_session(handler: ApiHandler) -> str:
    actor = handler.actor
    if actor is None or actor.api_key_id is not None or not actor.session_id:
        raise Forbidden("This needs a signed-in session; API keys cannot do it")
    return actor.session_id


def _valid_email(email: str) -> str:
    problem = identifier_problem(email)
    if problem:
        raise ValidationFailed("Invalid e-mail address", details=[{"field": "email", "message": problem}])
    normalized = normalize_email(email)
    # NFKC and lowercasing may lengthen it ("İ" becomes two code points): check the stored form.
    if len(normalized) > EMAIL_MAX_LENGTH or not EMAIL_PATTERN.match(normalized):
        raise ValidationFailed("Invalid e-mail address", details=[{"field": "email", "message": "is not a valid e-mail address"}])
    return normalized


def _valid_username(username: str | None) -> str | None:
    if username is None:
        return None
    problem = identifier_problem(username)
    if problem:
        raise ValidationFailed("Invalid username", details=[{"field": "username", "message": problem}])
    return normalize_username(username)


async def _send_verification(app: Any, user: User) -> None:
    """Part of registration when the recovery module is installed; never fails registration."""
    try:
        recovery = importlib.import_module("vachat.accounts.recovery")
    except ModuleNotFoundError:
        return
    sender = getattr(recovery, "send_verification_email", None)
    if sender is None:
        return
    try:
        await sender(app, user)
    except Exception:
        log.exception("sending the verification e-mail failed", extra={"userId": user.id})


class _EmailTaken(Exception):
    """Raised inside the registration transaction to roll it back; answered with 409."""


class _UsernameTaken(Exception):
    """Raised inside the registration transaction to roll it back; answered with 409."""


class RegisterHandler(ApiHandler):
    @endpoint("Create an account", body="core/auth/register", response="core/auth/auth-result",
              auth=False, status=201, tags=TAGS, errors=(409,),
              description="Creates the account with the `user` role, signs it in and sends a verification e-mail. "
                          "An e-mail address or username that looks the same as an existing account's "
                          "(case, fullwidth or other-script look-alikes) is a 409.")
    async def post(self) -> None:
        body = self.body
        email = _valid_email(body["email"])
        username = _valid_username(body.get("username"))
        await check_auth_limits(self, email)
        check_policy(body["password"], email=email)
        if body.get("timezone") is not None and not await self.application.run_blocking(is_timezone, body["timezone"]):
            raise ValidationFailed("Unknown time zone", details=[
                {"field": "timezone", "message": "is not an IANA time zone name (such as Europe/Paris)"}])
        hashed = await hash_password(self.application, body["password"])
        ip, agent = self.client_ip, user_agent_of(self)
        lifetime = session_ttl(self.application.config)

        def create() -> tuple[User, str, str]:
            with User._meta.database.atomic():
                if User.email_taken(email):
                    raise _EmailTaken()
                if username and User.username_taken(username):
                    raise _UsernameTaken()
                role = Role.get_or_none(Role.name == DEFAULT_ROLE)
                if role is None:  # deleted since start-up: put the default back rather than fail
                    ensure_default_roles()
                user = create_account(
                    email, hashed, role=DEFAULT_ROLE,
                    first_name=clean_name(body.get("firstName", "")), last_name=clean_name(body.get("lastName", "")),
                    display_name=clean_name(body.get("displayName") or "") or None, username=username,
                    timezone=body.get("timezone") or "UTC", language=body.get("language") or "en",
                    last_login_at=now(),
                )
                session_id, jti = sessions.open_session(user.id, ip, agent, lifetime)
                audit.record(audit.AUTH_REGISTER, user_id=user.id, actor_id=user.id, ip=ip, user_agent=agent)
                return user, session_id, jti

        try:
            user, session_id, jti = await self.application.db.run(create)
        except _EmailTaken:
            raise Conflict("An account with this e-mail address, or one that looks the same, already exists",
                           details=[{"field": "email", "message": "is already registered"}]) from None
        except _UsernameTaken:
            raise Conflict("This username, or one that looks the same, is taken",
                           details=[{"field": "username", "message": "is taken"}]) from None
        tokens = token_pair(self.application.config, user.id, session_id, jti)
        await _send_verification(self.application, user)
        await self.application.hooks.vachat_user_registered.notify(user=user.to_wire())
        self.respond({"user": user.to_wire(), "tokens": tokens, "sessionId": session_id}, status=201)


class LoginHandler(ApiHandler):
    @endpoint("Sign in with e-mail and password", body="core/auth/login", response="core/auth/auth-result",
              auth=False, tags=TAGS,
              description="Unknown e-mail and wrong password give the same 401. A disabled account gets 403 "
                          "once its password is proven. Failed sign-ins are limited by RATE_LIMIT_AUTH "
                          "per IP and per (account, IP), and by RATE_LIMIT_AUTH_ACCOUNT per account; "
                          "successful ones do not count.")
    async def post(self) -> None:
        app = self.application
        email = normalize_email(self.body["email"])
        password = self.body["password"]
        attempt = await check_auth_limits(self, email)
        user = await app.db.run(User.by_email, email) if email else None
        matches = await verify_password(app, password, user.password_hash if user is not None else None)
        if matches:
            await attempt.succeeded()  # only failed sign-ins count against the login limits
        else:
            await audit.audit(app, self, audit.AUTH_LOGIN_FAILED, user_id=user.id if user else None,
                              actor_id=None, details={"email": email[:254], "reason": "unknown_email" if user is None
                                                      else "bad_password"})
            raise Unauthorized("Invalid e-mail or password")
        if not user.is_active:
            await audit.audit(app, self, audit.AUTH_LOGIN_FAILED, user_id=user.id, actor_id=None,
                              details={"email": email, "reason": "disabled"})
            raise Forbidden("This account is disabled")
        ip, agent = self.client_ip, user_agent_of(self)
        lifetime = session_ttl(app.config)

        def sign_in() -> tuple[str, str, User]:
            with User._meta.database.atomic():
                moment = now()
                User.update(last_login_at=moment).where(User.id == user.id).execute()
                session_id, jti = sessions.open_session(user.id, ip, agent, lifetime)
                audit.record(audit.AUTH_LOGIN, user_id=user.id, actor_id=user.id, ip=ip, user_agent=agent,
                             details={"sessionId": session_id})
            user.last_login_at = moment
            return session_id, jti, user

        session_id, jti, user = await app.db.run(sign_in)
        tokens = token_pair(app.config, user.id, session_id, jti)
        self.respond({"user": user.to_wire(), "tokens": tokens, "sessionId": session_id})


class LogoutHandler(ApiHandler):
    @endpoint("End this session", tags=TAGS,
              description="Its access and refresh tokens stop working at once and its WebSockets close (4401).")
    async def post(self) -> None:
        session_id = _require_session(self)
        await sessions.revoke_session(self.application, session_id, "logout")
        await audit.audit(self.application, self, audit.AUTH_LOGOUT, user_id=self.actor.id,
                          details={"sessionId": session_id})
        self.respond(None, message="Signed out")


class RefreshHandler(ApiHandler):
    @endpoint("Exchange a refresh token for a new pair", body="core/auth/refresh",
              response="core/auth/refresh-result", auth=False, tags=TAGS,
              description="Rotates: the refresh token presented stops working. Presenting an already-used "
                          "refresh token ends the whole session (reuse detection).")
    async def post(self) -> None:
        user_id, session_id, tokens = await sessions.rotate(
            self.application, self.body["refreshToken"], ip=self.client_ip, user_agent=user_agent_of(self),
            handler=self)
        self.respond({"tokens": tokens, "sessionId": session_id})


class MeHandler(ApiHandler):
    @endpoint("The caller's account and permissions", response="core/auth/me", tags=TAGS)
    async def get(self) -> None:
        user = await self.application.db.run(User.get_or_none, User.id == self.actor.id)
        if user is None:
            raise Unauthorized("This account no longer exists")
        data = user.to_wire()
        data["permissions"] = sorted(self.actor.permissions)
        data["sessionId"] = None if self.actor.api_key_id else self.actor.session_id
        data["apiKeyId"] = self.actor.api_key_id
        self.respond(data)


class SessionsHandler(ApiHandler):
    @endpoint("List my active sessions", response="core/auth/session-list", tags=TAGS)
    async def get(self) -> None:
        current = None if self.actor.api_key_id else self.actor.session_id
        user_id = self.actor.id

        def active() -> list[dict[str, Any]]:
            rows = (Session.select()
                    .where(Session.user == user_id, Session.revoked_at.is_null(), Session.expires_at > now())
                    .order_by(Session.created_at.desc()))
            return [row.to_wire(current) for row in rows]

        self.respond(await self.application.db.run(active))


class SessionHandler(ApiHandler):
    @endpoint("End one of my sessions", tags=TAGS, errors=(404,),
              description="Another user's session id is a 404, like one that does not exist.")
    async def delete(self, item_id: str) -> None:
        _require_session(self)
        user_id = self.actor.id
        owned = await self.application.db.run(
            lambda: Session.select(Session.id).where(Session.id == item_id, Session.user == user_id,
                                                     Session.revoked_at.is_null()).exists())
        if not owned:
            raise NotFound("No such session")
        await sessions.revoke_session(self.application, item_id, "revoked")
        await audit.audit(self.application, self, audit.AUTH_SESSION_REVOKED, user_id=user_id,
                          details={"sessionId": item_id, "current": item_id == self.actor.session_id})
        self.respond(None, message="Session ended")


def _expiry(body: dict[str, Any]) -> datetime.datetime | None:
    if body.get("expiresAt") is not None and body.get("expiresInDays") is not None:
        raise ValidationFailed("Give expiresAt or expiresInDays, not both",
                               details=[{"field": "expiresInDays", "message": "cannot be combined with expiresAt"}])
    if body.get("expiresInDays") is not None:
        return now() + datetime.timedelta(days=body["expiresInDays"])
    text = body.get("expiresAt")
    if text is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is not None:  # may leave the calendar: 9999-12-31T23:59-01:00
            moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise ValidationFailed("Invalid expiresAt", details=[
            {"field": "expiresAt", "message": "must be an ISO 8601 date-time"}]) from None
    if moment <= now():
        raise ValidationFailed("expiresAt is in the past", details=[
            {"field": "expiresAt", "message": "must be in the future"}])
    if moment.year > 9000:
        raise ValidationFailed("Invalid expiresAt", details=[{"field": "expiresAt", "message": "is too far away"}])
    return moment


class ApiKeysHandler(ApiHandler):
    @endpoint("List my API keys (never their secrets)", response="core/auth/api-key-list", tags=TAGS)
    async def get(self) -> None:
        user_id = self.actor.id

        def listing() -> list[dict[str, Any]]:
            rows = (ApiKey.select().where(ApiKey.user == user_id, ApiKey.revoked_at.is_null())
                    .order_by(ApiKey.created_at.desc()))
            return [row.to_wire() for row in rows]

        self.respond(await self.application.db.run(listing))

    @endpoint("Create an API key", body="core/auth/api-key-create", response="core/auth/api-key-created",
              status=201, tags=TAGS, errors=(403, 409),
              description="The key is in this response only; it is stored hashed. Send it as X-API-Key.")
    async def post(self) -> None:
        _require_session(self)
        name = self.body["name"].strip()
        if not name:
            raise ValidationFailed("A name is required", details=[{"field": "name", "message": "must not be blank"}])
        permissions = self.body.get("permissions")
        if permissions is not None:
            permissions = apikeys.check_key_permissions(self.actor.permissions, permissions,
                                                        self.application.permissions)
        created = await apikeys.create_api_key(self.application, self.actor.id, name, _expiry(self.body),
                                               permissions)
        if created is None:
            raise Conflict(f"You already have {apikeys.MAX_KEYS_PER_USER} API keys; delete one first")
        row, key = created
        await audit.audit(self.application, self, audit.AUTH_API_KEY_CREATED, user_id=self.actor.id,
                          details={"apiKeyId": row.id, "name": name, "prefix": row.prefix,
                                   "permissions": permissions})
        self.respond({**row.to_wire(), "key": key}, status=201)


class ApiKeyHandler(ApiHandler):
    @endpoint("Revoke one of my API keys", tags=TAGS, errors=(403, 404),
              description="It stops working at once, on every node; sockets opened with it close.")
    async def delete(self, item_id: str) -> None:
        _require_session(self)
        row = await apikeys.revoke_api_key(self.application, self.actor.id, item_id)
        if row is None:
            raise NotFound("No such API key")
        await audit.audit(self.application, self, audit.AUTH_API_KEY_DELETED, user_id=self.actor.id,
                          details={"apiKeyId": row.id, "name": row.name, "prefix": row.prefix})
        self.respond(None, message="API key revoked")


ROUTES = [
    (r"/api/auth/register", RegisterHandler),
    (r"/api/auth/login", LoginHandler),
    (r"/api/auth/logout", LogoutHandler),
    (r"/api/auth/refresh", RefreshHandler),
    (r"/api/auth/me", MeHandler),
    (r"/api/auth/sessions", SessionsHandler),
    (rf"/api/auth/sessions/{_ID}", SessionHandler),
    (r"/api/auth/api-keys", ApiKeysHandler),
    (rf"/api/auth/api-keys/{_ID}", ApiKeyHandler),
]
