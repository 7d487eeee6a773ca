"""The accounts tables: users, roles, sessions, one-time tokens, API keys, the audit log,
and the per-user preferences and statistics rows.

Every model extends the core ``BaseModel`` (26-character time-ordered ids). E-mail addresses
are stored normalised and unique, and so are the confusable skeletons of addresses and
usernames (``identity`` is the one place that decides what "the same identity" means). ``to_wire()`` gives the camelCase dict a client may see; secrets
(password hashes, token and key hashes) are never part of it.

The schema itself is created by the hand-written migrations ``migrations/001_accounts.py`` and
``002_identity_skeletons.py`` and ``003_sessions_last_used_index.py``, never by ``create_tables()``: a change here needs a new
migration file next to them.

This module must never hold credentials in clear text: passwords are bcrypt hashes, reset and
verification tokens and API keys are SHA-256 hashes of high-entropy random strings.
"""

from __future__ import annotations

from typing import Any

import peewee

from ..db import BaseModel, JSONField, now
from .identity import email_skeleton, normalize_email, username_skeleton

__all__ = [
    "Role", "User", "Session", "PasswordReset", "EmailVerification", "ApiKey", "AuditLog",
    "UserPreferences", "UserStatistics", "SeenPermission", "ACCOUNT_MODELS", "normalize_email",
    "DEFAULT_ROLE", "ADMIN_ROLE", "DEFAULT_TIER", "SKELETON_MAX_LENGTH",
]

ADMIN_ROLE = "admin"
DEFAULT_ROLE = "user"
DEFAULT_TIER = "free"
# Longest e-mail address RFC 5321 lets through (a 64-octet local part, 255 domain: 254 in a path).
EMAIL_MAX_LENGTH = 254


# Longest skeleton kept: one character's prototype can be several (``m`` is ``rn``), so a
# skeleton may be longer than its identifier; this is room for four times the longest address.
SKELETON_MAX_LENGTH = 1024


class Role(BaseModel):
    """A named set of permission strings; ``*`` grants every permission."""

    name = peewee.CharField(max_length=64, unique=True)
    description = peewee.CharField(max_length=255, default="")
    permissions = JSONField(default=list)
    # Seeded roles (admin, user) cannot be deleted or renamed: users and code refer to them.
    is_system = peewee.BooleanField(default=False)
    created_at = peewee.DateTimeField(default=now)
    updated_at = peewee.DateTimeField(default=now)

    class Meta:
        table_name = "roles"

    def permission_set(self) -> frozenset[str]:
        return frozenset(str(p) for p in (self.permissions or ()))

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "permissions": sorted(self.permission_set()),
            "isSystem": self.is_system,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


class User(BaseModel):
    email = peewee.CharField(max_length=EMAIL_MAX_LENGTH, unique=True)
    password_hash = peewee.CharField(max_length=128)
    first_name = peewee.CharField(max_length=100, default="")
    last_name = peewee.CharField(max_length=100, default="")
    display_name = peewee.CharField(max_length=100, null=True)
    username = peewee.CharField(max_length=50, null=True, unique=True)
    # Look-alike keys (identity.email_skeleton / username_skeleton), unique: ``аlice`` with a
    # Cyrillic а cannot register beside ``alice``. Kept up to date by ``save()``. Null only
    # for a legacy account that already shared its skeleton when migration 002 ran.
    email_skeleton = peewee.CharField(max_length=SKELETON_MAX_LENGTH, null=True, unique=True)
    username_skeleton = peewee.CharField(max_length=SKELETON_MAX_LENGTH, null=True, unique=True)
    avatar_url = peewee.CharField(max_length=1024, null=True)
    bio = peewee.TextField(default="")
    timezone = peewee.CharField(max_length=64, default="UTC")
    language = peewee.CharField(max_length=16, default="en")
    # The role's name, not its id: readable in the table and in logs, and still a real
    # foreign key (role names are unique and never change once created).
    role = peewee.ForeignKeyField(Role, field=Role.name, column_name="role", backref="users",
                                  on_delete="RESTRICT", on_update="CASCADE", index=False)
    tier = peewee.CharField(max_length=32, default=DEFAULT_TIER)
    is_active = peewee.BooleanField(default=True)
    is_email_verified = peewee.BooleanField(default=False)
    last_login_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=now)
    updated_at = peewee.DateTimeField(default=now)

    class Meta:
        table_name = "users"
        indexes = ((("role",), False), (("created_at",), False))

    @property
    def role_name(self) -> str:
        return self.__data__.get("role") or DEFAULT_ROLE

    @property
    def full_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)

    @property
    def name(self) -> str:
        """What to call the user in the interface: display name, full name, or the address."""
        return self.display_name or self.full_name or self.email.split("@")[0]

    def save(self, *args: Any, **kwargs: Any) -> Any:
        self.email = normalize_email(self.email)
        self.email_skeleton = email_skeleton(self.email)
        self.username_skeleton = username_skeleton(self.username) if self.username else None
        if self._pk is not None and not kwargs.get("force_insert"):
            self.updated_at = now()
        return super().save(*args, **kwargs)

    @classmethod
    def by_email(cls, email: str) -> "User | None":
        return cls.get_or_none(cls.email == normalize_email(email))

    @classmethod
    def email_taken(cls, email: str) -> bool:
        """Whether an account has this address, or one that looks the same."""
        return cls.select().where((cls.email == normalize_email(email)) |
                                  (cls.email_skeleton == email_skeleton(email))).exists()

    @classmethod
    def username_taken(cls, username: str) -> bool:
        """Whether an account has this username, or one that looks the same in any case."""
        return cls.select().where(cls.username_skeleton == username_skeleton(username)).exists()

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "displayName": self.display_name,
            "username": self.username,
            "name": self.name,
            "avatarUrl": self.avatar_url,
            "bio": self.bio,
            "timezone": self.timezone,
            "language": self.language,
            "role": self.role_name,
            "tier": self.tier,
            "isActive": self.is_active,
            "isEmailVerified": self.is_email_verified,
            "lastLoginAt": self.last_login_at,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


class Session(BaseModel):
    """One signed-in device. Access and refresh tokens name it (``sid``); revoking it (or
    letting it expire) refuses both at once."""

    user = peewee.ForeignKeyField(User, backref="sessions", on_delete="CASCADE", index=False)
    # The jti of the one refresh token that may still be used. Rotation replaces it in a
    # conditional UPDATE, so presenting any older refresh token is detectable reuse.
    refresh_jti = peewee.CharField(max_length=64)
    ip = peewee.CharField(max_length=64, default="")
    user_agent = peewee.CharField(max_length=512, default="")
    created_at = peewee.DateTimeField(default=now)
    last_used_at = peewee.DateTimeField(default=now)
    expires_at = peewee.DateTimeField()
    revoked_at = peewee.DateTimeField(null=True)
    revoked_reason = peewee.CharField(max_length=64, null=True)

    class Meta:
        table_name = "sessions"
        # (last_used_at, user): the dashboard's "active in 24 hours", a covering range
        # (migrations/003_sessions_last_used_index.py).
        indexes = ((("user", "revoked_at"), False), (("last_used_at", "user"), False))

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.expires_at > now()

    def to_wire(self, current_session_id: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "ip": self.ip,
            "userAgent": self.user_agent,
            "createdAt": self.created_at,
            "lastUsedAt": self.last_used_at,
            "expiresAt": self.expires_at,
            "current": self.id == current_session_id,
        }


class PasswordReset(BaseModel):
    """A password-reset token (only its SHA-256 is stored). Single use, expiring; a newer one
    for the same user supersedes the older ones (they get ``used_at`` set)."""

    user = peewee.ForeignKeyField(User, backref="password_resets", on_delete="CASCADE", index=False)
    token_hash = peewee.CharField(max_length=64, unique=True)
    ip = peewee.CharField(max_length=64, default="")
    created_at = peewee.DateTimeField(default=now)
    expires_at = peewee.DateTimeField()
    used_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "password_resets"
        indexes = ((("user", "used_at"), False),)


class EmailVerification(BaseModel):
    """An e-mail verification token (only its SHA-256 is stored) for ``email``, the address
    it proves; single use, expiring, superseded by a newer one."""

    user = peewee.ForeignKeyField(User, backref="email_verifications", on_delete="CASCADE", index=False)
    email = peewee.CharField(max_length=EMAIL_MAX_LENGTH)
    token_hash = peewee.CharField(max_length=64, unique=True)
    created_at = peewee.DateTimeField(default=now)
    expires_at = peewee.DateTimeField()
    used_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "email_verifications"
        indexes = ((("user", "used_at"), False),)


class ApiKey(BaseModel):
    """A long-lived credential for scripts and bots, acting as its user.

    The key (``vak_…``) is shown once at creation; only its SHA-256 is kept, plus a short
    non-secret ``prefix`` so people can tell their keys apart in a list. ``permissions`` is
    the subset of its owner's it was created with (None: all of them); it acts with the part
    of it its owner still holds (``principal.key_permissions``).
    """

    user = peewee.ForeignKeyField(User, backref="api_keys", on_delete="CASCADE", index=False)
    name = peewee.CharField(max_length=100)
    prefix = peewee.CharField(max_length=16)
    key_hash = peewee.CharField(max_length=64, unique=True)
    created_at = peewee.DateTimeField(default=now)
    last_used_at = peewee.DateTimeField(null=True)
    expires_at = peewee.DateTimeField(null=True)
    revoked_at = peewee.DateTimeField(null=True)
    permissions = JSONField(null=True)  # migration 004

    class Meta:
        table_name = "api_keys"
        indexes = ((("user", "revoked_at"), False),)

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now())

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "createdAt": self.created_at,
            "lastUsedAt": self.last_used_at,
            "expiresAt": self.expires_at,
            "expired": self.expires_at is not None and self.expires_at <= now(),
            "permissions": self.permissions,
        }


class AuditLog(BaseModel):
    """Who did what security-relevant thing, from where. Rows outlive their users: the ids
    are plain columns, not foreign keys, so deleting a user keeps the trail."""

    action = peewee.CharField(max_length=64)
    user_id = peewee.CharField(max_length=26, null=True)  # whom it concerns
    actor_id = peewee.CharField(max_length=26, null=True)  # who did it (an admin, or the user)
    ip = peewee.CharField(max_length=64, null=True)
    user_agent = peewee.CharField(max_length=512, null=True)
    details = JSONField(null=True)
    created_at = peewee.DateTimeField(default=now)

    class Meta:
        table_name = "audit_logs"
        indexes = (
            (("user_id", "created_at"), False),
            (("action", "created_at"), False),
            (("created_at",), False),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "userId": self.user_id,
            "actorId": self.actor_id,
            "ip": self.ip,
            "userAgent": self.user_agent,
            "details": self.details or {},
            "createdAt": self.created_at,
        }


class UserPreferences(BaseModel):
    """Free-form client preferences (theme, notifications, …): one JSON object per user."""

    user = peewee.ForeignKeyField(User, backref="preferences_rows", on_delete="CASCADE", unique=True)
    data = JSONField(default=dict)
    updated_at = peewee.DateTimeField(default=now)

    class Meta:
        table_name = "user_preferences"

    def to_wire(self) -> dict[str, Any]:
        return dict(self.data or {})


class UserStatistics(BaseModel):
    """Counters other features keep up to date (chat, files, AI); read by the admin pages."""

    user = peewee.ForeignKeyField(User, backref="statistics_rows", on_delete="CASCADE", unique=True)
    conversation_count = peewee.IntegerField(default=0)
    message_count = peewee.IntegerField(default=0)
    file_count = peewee.IntegerField(default=0)
    storage_bytes = peewee.BigIntegerField(default=0)
    ai_tokens_used = peewee.BigIntegerField(default=0)
    last_active_at = peewee.DateTimeField(null=True)
    updated_at = peewee.DateTimeField(default=now)

    class Meta:
        table_name = "user_statistics"

    def to_wire(self) -> dict[str, Any]:
        return {
            "conversationCount": self.conversation_count,
            "messageCount": self.message_count,
            "fileCount": self.file_count,
            "storageBytes": self.storage_bytes,
            "aiTokensUsed": self.ai_tokens_used,
            "lastActiveAt": self.last_active_at,
        }


class SeenPermission(BaseModel):
    """A permission this database has seen declared: its default grants (``grant_to``) were
    applied then, once. Kept so that an operator's later revoke is not undone at the next
    start."""

    id = peewee.CharField(primary_key=True, max_length=128)  # the permission's name
    seen_at = peewee.DateTimeField(default=now)

    class Meta:
        table_name = "seen_permissions"


#: In dependency order (a table before those referring to it).
ACCOUNT_MODELS = (Role, User, Session, PasswordReset, EmailVerification, ApiKey, AuditLog,
                  UserPreferences, UserStatistics, SeenPermission)

