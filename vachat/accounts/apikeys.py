"""API keys: long-lived credentials for scripts and bots (``X-API-Key: vak_…``).

A key is ``vak_`` + 256 random bits (URL-safe base64). It is shown once, at creation; the
database keeps its SHA-256 (a fast hash is right here: the key is random, not a guessable
password) and a short non-secret ``prefix`` for lists. The ``vak_`` prefix also lets the log
filter recognise and redact keys. A key acts as its user until it expires or is revoked (an
expired key is refused exactly like a revoked one); revoking closes the sockets it opened
(their session id on the hub is ``apikey:<key id>``).

A key may be created with a subset of its owner's permissions (``permissions``; None: all of
them). It acts with ``key_permissions``: what it was given that its owner still holds, so it
shrinks with its owner's role and never outgrows it.

This module must never store or log a key, and never compare hashes in a way that leaks
timing (lookups are by the hash's equality in an indexed column, never by prefix).
"""

from __future__ import annotations

import datetime
import hashlib
import re
import secrets
import time
from typing import Any

from ..db import now
from ..errors import Unauthorized, ValidationFailed
from .delegation import SUPERUSER_PERMISSION
from .cache import auth_cache, unknown_api_keys
from .models import ApiKey, Role, User
from .principal import CLOSE_SESSION_ENDED, key_permissions, principal_of
from .sessions import api_key_cache_key

__all__ = [
    "KEY_PREFIX", "generate_key", "hash_key", "create_api_key", "revoke_api_key",
    "api_key_principal", "api_key_session_id", "looks_like_api_key", "MAX_KEYS_PER_USER",
    "revoke_user_api_key_rows", "forget_revoked_api_keys", "key_permissions", "check_key_permissions",
]

KEY_PREFIX = "vak_"
# 32 random bytes: 256 bits, beyond any brute force even at a fast hash.
KEY_BYTES = 32
# Characters of the key shown in lists (``vak_`` + 8): enough to tell keys apart, 48 bits
# of 256, so showing it costs nothing.
DISPLAY_PREFIX_LENGTH = 12
# Active keys one user may hold: plenty for scripts and bots, and a bound on what a stolen
# session could mint.
MAX_KEYS_PER_USER = 50
# A key's lastUsedAt is written at most this often (s), so a busy bot does not cost a write
# per request.
LAST_USED_RESOLUTION_SECONDS = 60
# The exact shape generate_key() makes: anything else is refused without a lookup.
_KEY_SHAPE = re.compile(r"^vak_[A-Za-z0-9_-]{43}$")


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def looks_like_api_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX)


def api_key_session_id(key_id: str) -> str:
    """The hub's session id for sockets opened with a key (so revoking can close them)."""
    return f"apikey:{key_id}"


def check_key_permissions(owner: frozenset[str], wanted: list[str], declared: Any) -> list[str]:
    """``wanted``, sorted, if the owner holds each one and each is declared (or ``*``);
    ``ValidationFailed`` on ``permissions`` naming the others."""
    problems = []
    for name in sorted(set(wanted)):
        if name != SUPERUSER_PERMISSION and name not in declared:
            problems.append(f"{name!r} is not a declared permission")
        elif name not in owner and SUPERUSER_PERMISSION not in owner:
            problems.append(f"{name!r} is not a permission you hold")
    if problems:
        raise ValidationFailed("A key cannot have permissions its owner does not hold", details=[
            {"field": "permissions", "message": problem} for problem in problems])
    return sorted(set(wanted))


def _insert(user_id: str, name: str, key: str, expires_at: datetime.datetime | None,
            permissions: list[str] | None) -> ApiKey | None:
    active = ApiKey.select().where(ApiKey.user == user_id, ApiKey.revoked_at.is_null()).count()
    if active >= MAX_KEYS_PER_USER:
        return None
    return ApiKey.create(user=user_id, name=name, prefix=key[:DISPLAY_PREFIX_LENGTH],
                         key_hash=hash_key(key), expires_at=expires_at, permissions=permissions)


async def create_api_key(app: Any, user_id: str, name: str, expires_at: datetime.datetime | None = None,
                         permissions: list[str] | None = None) -> tuple[ApiKey, str] | None:
    """Create a key (``permissions``: checked with ``check_key_permissions`` by the caller;
    None: all of its owner's); returns ``(row, key)`` — the only time the key exists in clear —
    or None when the user already holds ``MAX_KEYS_PER_USER`` active keys."""
    key = generate_key()
    row = await app.db.run(_insert, user_id, name, key, expires_at, permissions)
    return (row, key) if row is not None else None


async def revoke_api_key(app: Any, user_id: str, key_id: str) -> ApiKey | None:
    """Revoke ``user_id``'s key ``key_id``: refused from the next request on every node and
    its sockets closed. Returns the row, or None when the user has no such active key."""
    def revoke() -> ApiKey | None:
        row = ApiKey.get_or_none(ApiKey.id == key_id, ApiKey.user == user_id, ApiKey.revoked_at.is_null())
        if row is None:
            return None
        row.revoked_at = now()
        row.save(only=[ApiKey.revoked_at])
        return row

    row = await app.db.run(revoke)
    if row is not None:
        await auth_cache(app).tombstone(api_key_cache_key(row.key_hash))
        await app.hub.disconnect(session_id=api_key_session_id(row.id), code=CLOSE_SESSION_ENDED,
                                 reason="API key revoked")
    return row


def revoke_user_api_key_rows(user_id: str) -> list[tuple[str, str]]:
    """Revoke every active key of ``user_id`` (synchronous: run inside ``app.db.run``, in the
    transaction that changes the password). Returns ``(id, key hash)`` of each key revoked,
    for ``forget_revoked_api_keys``."""
    keys = [(row.id, row.key_hash) for row in
            ApiKey.select(ApiKey.id, ApiKey.key_hash).where(ApiKey.user == user_id, ApiKey.revoked_at.is_null())]
    if keys:
        (ApiKey.update(revoked_at=now())
         .where(ApiKey.id.in_([key_id for key_id, _ in keys]), ApiKey.revoked_at.is_null()).execute())
    return keys


async def forget_revoked_api_keys(app: Any, keys: list[tuple[str, str]]) -> None:
    """After ``revoke_user_api_key_rows``: refuse the keys from the next request on, on every
    node (cache tombstones), and close the sockets they opened."""
    await auth_cache(app).tombstone(*(api_key_cache_key(key_hash) for _, key_hash in keys))
    for key_id, _ in keys:
        await app.hub.disconnect(session_id=api_key_session_id(key_id), code=CLOSE_SESSION_ENDED,
                                 reason="API key revoked")


def _load(key_hash: str) -> dict[str, Any] | None:
    row = (ApiKey.select(ApiKey, User, Role).join(User).join(Role)
           .where(ApiKey.key_hash == key_hash).first())
    if row is None or not row.is_active or not row.user.is_active:
        return None
    moment = now()
    if row.last_used_at is None or (moment - row.last_used_at).total_seconds() >= LAST_USED_RESOLUTION_SECONDS:
        ApiKey.update(last_used_at=moment).where(ApiKey.id == row.id).execute()
    principal = principal_of(row.user, row.user.role)
    principal["perms"] = sorted(key_permissions(frozenset(principal["perms"]), row.permissions))
    principal["kid"] = row.id
    if row.expires_at is not None:
        principal["kexp"] = row.expires_at.replace(tzinfo=datetime.timezone.utc).timestamp()
    return principal


async def api_key_principal(app: Any, key: str) -> dict[str, Any]:
    """Who ``key`` authenticates (cached like sessions); ``Unauthorized`` when it is unknown,
    revoked, expired, or its user is disabled."""
    if not _KEY_SHAPE.match(key):
        raise Unauthorized("Invalid API key")
    key_hash = hash_key(key)
    unknown = unknown_api_keys(app)
    if key_hash in unknown:  # a dead key retried: no query until the entry expires
        raise Unauthorized("Invalid API key")
    cache = auth_cache(app)
    principal = await cache.get(api_key_cache_key(key_hash))
    if principal is not None and principal.get("revoked"):
        raise Unauthorized("Invalid API key")
    if principal is None or principal.get("kexp", float("inf")) <= time.time():
        principal = await app.db.run(_load, key_hash)
        if principal is None:
            unknown.add(key_hash)
            raise Unauthorized("Invalid API key")
        await cache.set(api_key_cache_key(key_hash), principal)
    return principal
