"""The signed-in user's own account: ``/api/users/profile`` and ``/api/users/change-password``.

- ``GET /api/users/profile`` — the user (``User.to_wire()``, as ``GET /api/auth/me``) with a
  ``preferences`` object.
- ``PUT /api/users/profile`` — first/last/display name, bio, timezone (a real IANA zone, checked
  with ``zoneinfo``), language (a BCP 47 tag) and preferences (merged key by key; a key set to
  ``null`` is removed). Only the fields sent change. The body schema has
  ``additionalProperties: false``: role, tier, ``isActive``, ``isEmailVerified``, ``email`` or
  any unknown field is VALIDATION_FAILED naming each one (no mass assignment).
- ``POST /api/users/change-password`` — needs the current password. A wrong one is
  400 VALIDATION_FAILED on ``currentPassword``, not 401: a 401 tells clients their *session*
  is gone, and they would sign the user out for a typo. Attempts are limited per user at
  RATE_LIMIT_AUTH, so a stolen access token cannot be used to guess the password. Every other
  session of the user ends (their sockets close); the caller's session stays. API keys keep
  working (scripts and bots are not signed out by a routine change) unless the body says
  ``"revokeApiKeys": true``; a password *reset* always revokes them. An API key cannot change
  the password (403): it is a credential for scripts, not proof of the person.

The avatar upload (``POST /api/users/avatar``) belongs to the files plugin.

This module must never write a field the body schema does not list, never run bcrypt or
Peewee on the IOLoop, and never log a password.
"""

from __future__ import annotations

import functools
import zoneinfo
from typing import Any

import peewee

from ..db import database, now
from ..errors import Forbidden, RateLimited, Unauthorized, ValidationFailed
from ..web import ApiHandler, endpoint
from ..wire import check_json_size
from .apikeys import forget_revoked_api_keys, revoke_user_api_key_rows
from .audit import AUTH_PASSWORD_CHANGE_FAILED, AUTH_PASSWORD_CHANGED, audit, record, request_origin
from .identity import clean_name, normalize_password
from .models import User, UserPreferences
from .passwords import check_policy, hash_password, verify_password
from .sessions import invalidate_user, revoke_user_sessions

__all__ = ["ROUTES", "profile_of", "is_timezone", "confirmed_by_password"]

# Wire name → User column, for the plain profile fields (preferences live in their own table).
PROFILE_FIELDS = {
    "firstName": "first_name",
    "lastName": "last_name",
    "displayName": "display_name",
    "bio": "bio",
    "timezone": "timezone",
    "language": "language",
}


@functools.lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    # Reads the zone database from disk once: call through run_blocking the first time.
    return frozenset(zoneinfo.available_timezones())


def is_timezone(name: str) -> bool:
    """Whether ``name`` is an IANA time zone key (``Europe/Paris``, ``UTC``). Blocking on the
    first call (it lists the zone database)."""
    return name in _timezones()


def _load_profile(user_id: str) -> dict[str, Any] | None:
    user = User.get_or_none(User.id == user_id)
    if user is None:
        return None
    return profile_of(user, UserPreferences.get_or_none(UserPreferences.user == user_id))


def profile_of(user: User, preferences: UserPreferences | None) -> dict[str, Any]:
    """The wire object: ``User.to_wire()`` (as ``GET /api/auth/me``) plus ``preferences``."""
    return {**user.to_wire(), "preferences": preferences.to_wire() if preferences else {}}


def _merge_preferences(stored: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(stored)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    check_json_size(merged, "preferences")
    return merged


def _update_profile(user_id: str, fields: dict[str, Any], preference_changes: dict[str, Any] | None) -> dict[str, Any] | None:
    moment = now()
    with database.atomic():
        if not User.update({**fields, "updated_at": moment}).where(User.id == user_id).execute():
            return None
        if preference_changes is not None:
            row = UserPreferences.get_or_none(UserPreferences.user == user_id)
            if row is None:
                try:
                    with database.atomic():  # a savepoint: a concurrent first write may win the insert
                        row = UserPreferences.create(user=user_id, data={}, updated_at=moment)
                except peewee.IntegrityError:
                    row = UserPreferences.get(UserPreferences.user == user_id)
            row.data = _merge_preferences(row.data or {}, preference_changes)
            row.updated_at = moment
            row.save()
        return _load_profile(user_id)


class ProfileHandler(ApiHandler):
    @endpoint("Read my profile", response="core/users/profile", tags=("users",))
    async def get(self) -> None:
        profile = await self.application.db.run(_load_profile, self.actor.id)
        if profile is None:
            raise Unauthorized()
        self.respond(profile)

    @endpoint("Update my profile", body="core/users/profile-update", response="core/users/profile",
              tags=("users",), errors=(400,),
              description="Only the fields sent change. Role, tier, active flag, e-mail and its "
                          "verification cannot be changed here: sending them is VALIDATION_FAILED.")
    async def put(self) -> None:
        app = self.application
        body = self.body
        timezone = body.get("timezone")
        if timezone is not None and not await app.run_blocking(is_timezone, timezone):
            raise ValidationFailed("Unknown time zone", details=[
                {"field": "timezone", "message": "is not an IANA time zone name (such as Europe/Paris)"}])
        fields = {column: body[name] for name, column in PROFILE_FIELDS.items() if name in body}
        for column in ("first_name", "last_name"):
            if column in fields:
                fields[column] = clean_name(fields[column])
        if "bio" in fields:
            fields["bio"] = fields["bio"].strip()
        if fields.get("display_name") is not None:
            fields["display_name"] = clean_name(fields["display_name"]) or None
        profile = await app.db.run(_update_profile, self.actor.id, fields, body.get("preferences"))
        if profile is None:
            raise Unauthorized()
        if {"first_name", "last_name", "display_name"} & fields.keys():
            await invalidate_user(app, self.actor.id)  # the cached identity carries the name
        self.respond(profile, message="Profile updated")


def _set_password(user_id: str, password_hash: str, revoke_api_keys: bool, ip: str | None,
                  user_agent: str | None) -> list[tuple[str, str]]:
    """Set the password (and revoke the API keys when asked) in one transaction; returns the
    keys revoked."""
    moment = now()
    with database.atomic():
        User.update(password_hash=password_hash, updated_at=moment).where(User.id == user_id).execute()
        revoked = revoke_user_api_key_rows(user_id) if revoke_api_keys else []
        record(AUTH_PASSWORD_CHANGED, user_id=user_id, actor_id=user_id, ip=ip, user_agent=user_agent,
               details={"apiKeysRevoked": len(revoked)})
    return revoked


async def confirmed_by_password(handler: ApiHandler, password: str, *, field: str, purpose: str,
                                refused: str) -> User:
    """The signed-in caller's account, once ``password`` proved it is the person: what a
    change only the person may make (a new password, deleting the account) asks first.

    An API key or a token without a session is 403: a key is a credential for scripts, not
    proof of the person. Attempts count per user and ``purpose`` at ``RATE_LIMIT_AUTH``, so a
    stolen access token cannot be used to guess the password. A wrong password is 400 on
    ``field``, not 401 (which tells clients their session is gone), and audited as ``refused``.
    """
    app = handler.application
    actor = handler.actor
    if actor is None or actor.api_key_id is not None or actor.session_id is None:
        raise Forbidden("Sign in with your password to do this; an API key cannot")
    decision = await app.limiter.hit(f"auth:{purpose}:user:{actor.id}", app.config.rate_limit_auth)
    if not decision.allowed:
        raise RateLimited("Too many attempts; try again later", retry_after=decision.retry_after)
    user: User | None = await app.db.run(User.get_or_none, User.id == actor.id)
    if user is None:
        raise Unauthorized()
    if not await verify_password(app, password, user.password_hash):
        which = "current password" if field == "currentPassword" else "password"
        await audit(app, handler, refused, user_id=user.id, details={"reason": f"wrong_{which.replace(' ', '_')}"})
        raise ValidationFailed(f"The {which} is incorrect", details=[{"field": field, "message": "is incorrect"}])
    return user


class ChangePasswordHandler(ApiHandler):
    @endpoint("Change my password", body="core/users/change-password",
              response="core/users/change-password-result", tags=("users",), errors=(400, 403, 429),
              description="Needs the current password (a wrong one is 400 on `currentPassword`). "
                          "Every other session ends; this one stays signed in. API keys keep working "
                          "unless the body says `revokeApiKeys: true`.")
    async def post(self) -> None:
        app = self.application
        actor = self.actor
        current, new = self.body["currentPassword"], self.body["newPassword"]
        user = await confirmed_by_password(self, current, field="currentPassword", purpose="change-password",
                                           refused=AUTH_PASSWORD_CHANGE_FAILED)
        if normalize_password(new) == normalize_password(current):
            raise ValidationFailed("Choose a password different from the current one", details=[
                {"field": "newPassword", "message": "must differ from the current password"}])
        check_policy(new, email=user.email, field="newPassword")
        password_hash = await hash_password(app, new)
        ip, user_agent = request_origin(self)
        revoked = await app.db.run(_set_password, user.id, password_hash, self.body.get("revokeApiKeys", False),
                                   ip, user_agent)
        await forget_revoked_api_keys(app, revoked)
        ended = await revoke_user_sessions(app, user.id, except_session_id=actor.session_id,
                                           reason="password_changed")
        self.respond({"sessionsEnded": ended, "apiKeysRevoked": len(revoked)},
                     message="Password changed; your other sessions were signed out.")


ROUTES: list[tuple[str, type]] = [
    (r"/api/users/profile", ProfileHandler),
    (r"/api/users/change-password", ChangePasswordHandler),
]
