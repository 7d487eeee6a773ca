"""Server-side sessions: sign-in, refresh rotation with reuse detection, revocation, and the
cached "is this session still good" check every authenticated request makes.

A session is one signed-in device. Its access and refresh tokens both name it (``sid``), so
revoking it refuses both at once: the revoking call deletes the session's cache entry
(awaited, on every node — see ``cache``) and closes its WebSockets on every node
(``app.hub.disconnect``) before it returns.

Refresh rotation: the session row holds the jti of the one refresh token that may still be
used. ``rotate`` swaps it in a single conditional UPDATE; a refresh token whose jti is not the
current one, presented for a live session, is a replay (stolen token, or a client bug) and
ends the whole session (``auth.refresh_reuse`` in the audit log). Two concurrent refreshes
with the same token count as reuse too: clients must serialise their refreshes.

This module must never block the IOLoop (every query runs in ``app.db.run``), never cache a
revoked or unknown session, and never log a token.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

from ..db import now
from ..errors import Unauthorized
from . import audit as audit_log
from .cache import auth_cache
from .live import refresh_role, refresh_users
from .models import ApiKey, Role, Session, User
from .principal import CLOSE_SESSION_ENDED, principal_of
from .tokens import REFRESH, REFRESH_TTL_SECONDS, decode_token, new_jti, refresh_ttl, token_pair

__all__ = [
    "open_session", "create_session", "rotate", "revoke_session", "revoke_user_sessions",
    "session_principal", "invalidate_user", "invalidate_role", "set_user_active",
    "session_cache_key", "api_key_cache_key",
]

log = logging.getLogger("vachat.accounts.sessions")

# Longest user agent kept on a session (the column's width).
USER_AGENT_MAX = 512


def session_cache_key(session_id: str) -> str:
    return f"s:{session_id}"


def api_key_cache_key(key_hash: str) -> str:
    return f"k:{key_hash}"


def _epoch(moment: datetime.datetime) -> float:
    return moment.replace(tzinfo=datetime.timezone.utc).timestamp()


# ---------------------------------------------------------------------------
# sign-in and rotation
# ---------------------------------------------------------------------------


def open_session(user_id: str, ip: str | None, user_agent: str | None,
                 ttl: int = REFRESH_TTL_SECONDS) -> tuple[str, str]:
    """Insert a session row (synchronous: run inside ``app.db.run``) that lives ``ttl``
    seconds (``refresh_ttl(app.config)``) unless refreshed. Returns (id, refresh jti)."""
    jti = new_jti()
    session = Session.create(
        user=user_id, refresh_jti=jti, ip=(ip or "")[:64], user_agent=(user_agent or "")[:USER_AGENT_MAX],
        expires_at=now() + datetime.timedelta(seconds=ttl),
    )
    return session.id, jti


async def create_session(app: Any, user_id: str, *, ip: str | None = None,
                         user_agent: str | None = None) -> tuple[str, dict[str, Any]]:
    """Start a session for ``user_id``: returns ``(session id, tokens)`` where ``tokens`` is
    the wire object ``{accessToken, refreshToken, tokenType, expiresIn, refreshExpiresIn}``."""
    session_id, jti = await app.db.run(open_session, user_id, ip, user_agent, refresh_ttl(app.config))
    return session_id, token_pair(app.config, user_id, session_id, jti)


def _rotate_row(session_id: str, user_id: str, old_jti: str, ip: str | None,
                user_agent: str | None, ttl: int = REFRESH_TTL_SECONDS) -> tuple[str, str | None]:
    """Swap the refresh jti if ``old_jti`` is current. Returns (outcome, new jti) where
    outcome is ``rotated``, ``reused``, ``ended`` or ``disabled``."""
    fresh = new_jti()
    moment = now()
    changes: dict[Any, Any] = {
        Session.refresh_jti: fresh, Session.last_used_at: moment,
        Session.expires_at: moment + datetime.timedelta(seconds=ttl),
    }
    if ip:
        changes[Session.ip] = ip[:64]
    if user_agent:
        changes[Session.user_agent] = user_agent[:USER_AGENT_MAX]
    updated = (Session.update(changes)
               .where(Session.id == session_id, Session.user == user_id, Session.refresh_jti == old_jti,
                      Session.revoked_at.is_null(), Session.expires_at > moment)
               .execute())
    if updated == 1:
        user = User.get_or_none(User.id == user_id)
        if user is None or not user.is_active:
            return "disabled", None
        return "rotated", fresh
    session = Session.get_or_none(Session.id == session_id, Session.user == user_id)
    if session is None or not session.is_active:
        return "ended", None
    return "reused", None


async def rotate(app: Any, refresh_token: str, *, ip: str | None = None, user_agent: str | None = None,
                 handler: Any = None) -> tuple[str, str, dict[str, Any]]:
    """Exchange a refresh token for a new pair. Returns ``(user id, session id, tokens)``.

    Raises ``TokenExpired`` for an expired token and ``Unauthorized`` for anything else that
    is not the session's current refresh token; a replayed one also ends the session.
    """
    claims = decode_token(app.config, refresh_token, REFRESH)
    user_id, session_id = claims["sub"], claims["sid"]
    outcome, jti = await app.db.run(_rotate_row, session_id, user_id, claims["jti"], ip, user_agent,
                                     refresh_ttl(app.config))
    if outcome == "rotated":
        return user_id, session_id, token_pair(app.config, user_id, session_id, jti)
    if outcome == "reused":
        log.warning("refresh token reuse: session ended", extra={"userId": user_id, "sessionId": session_id})
        await revoke_session(app, session_id, "refresh_reuse")
        await audit_log.audit(app, handler, audit_log.AUTH_REFRESH_REUSE, user_id=user_id, actor_id=user_id,
                              ip=ip, user_agent=user_agent, details={"sessionId": session_id})
        raise Unauthorized("This refresh token was already used; the session has been ended")
    if outcome == "disabled":
        await revoke_session(app, session_id, "disabled")
        raise Unauthorized("This account is disabled")
    raise Unauthorized("The session has ended; sign in again")


# ---------------------------------------------------------------------------
# revocation
# ---------------------------------------------------------------------------


async def revoke_session(app: Any, session_id: str, reason: str) -> bool:
    """End one session now: its tokens are refused from the next request on, on every node,
    and its WebSockets are closed (4401). Returns whether it was still active."""
    def revoke() -> int:
        return (Session.update(revoked_at=now(), revoked_reason=reason[:64])
                .where(Session.id == session_id, Session.revoked_at.is_null()).execute())

    changed = await app.db.run(revoke)
    await auth_cache(app).tombstone(session_cache_key(session_id))
    await app.hub.disconnect(session_id=session_id, code=CLOSE_SESSION_ENDED, reason="Session ended")
    return changed > 0


async def revoke_user_sessions(app: Any, user_id: str, *, except_session_id: str | None = None,
                               reason: str) -> int:
    """End every active session of ``user_id`` but ``except_session_id`` (password change
    keeps the caller's), with the same immediacy as ``revoke_session``. Returns how many."""
    def revoke() -> list[str]:
        moment = now()
        query = Session.select(Session.id).where(Session.user == user_id, Session.revoked_at.is_null())
        if except_session_id is not None:
            query = query.where(Session.id != except_session_id)
        ids = [row.id for row in query]
        if ids:
            (Session.update(revoked_at=moment, revoked_reason=reason[:64])
             .where(Session.id.in_(ids), Session.revoked_at.is_null()).execute())
        return ids

    ids = await app.db.run(revoke)
    await auth_cache(app).tombstone(*(session_cache_key(sid) for sid in ids))
    # Socket by socket: the sessions' sockets only (API-key sockets and the kept session's
    # stay; set_user_active closes everything of a disabled user).
    for sid in ids:
        await app.hub.disconnect(session_id=sid, code=CLOSE_SESSION_ENDED, reason="Session ended")
    return len(ids)


# ---------------------------------------------------------------------------
# cache invalidation for changes that are not revocations
# ---------------------------------------------------------------------------


def _credential_keys_of_users(user_filter: Any) -> list[str]:
    sessions = (Session.select(Session.id).join(User)
                .where(user_filter, Session.revoked_at.is_null(), Session.expires_at > now()))
    keys = [session_cache_key(row.id) for row in sessions]
    api_keys = ApiKey.select(ApiKey.key_hash).join(User).where(user_filter, ApiKey.revoked_at.is_null())
    keys += [api_key_cache_key(row.key_hash) for row in api_keys]
    return keys


async def invalidate_user(app: Any, user_id: str) -> None:
    """Drop the cached identity of every credential of ``user_id`` (after a change of role,
    tier, name, e-mail or active flag), so the next request reads the new state."""
    keys = await app.db.run(_credential_keys_of_users, User.id == user_id)
    await auth_cache(app).delete(*keys)
    await refresh_users(app, [user_id])


async def invalidate_role(app: Any, role_name: str) -> None:
    """Drop the cached identity of every credential of every user holding ``role_name``
    (after its permissions changed)."""
    keys = await app.db.run(_credential_keys_of_users, User.role == role_name)
    cache = auth_cache(app)
    await cache.delete(*keys)
    cache.forget_matching(lambda value: value.get("role") == role_name)
    await refresh_role(app, role_name)


async def set_user_active(app: Any, user_id: str, active: bool, *, reason: str = "disabled",
                          actor_id: str | None = None, handler: Any = None) -> bool:
    """Enable or disable an account. Disabling ends its sessions, makes its API keys stop
    working and closes all its sockets, effective from the next request on every node.
    Writes ``user.disabled`` / ``user.enabled`` to the audit log. Returns whether it changed."""
    def update() -> int:
        return (User.update(is_active=active, updated_at=now())
                .where(User.id == user_id, User.is_active == (not active)).execute())

    changed = await app.db.run(update) > 0
    keys = await app.db.run(_credential_keys_of_users, User.id == user_id)
    if not active:
        # Tombstones, not deletes, for the API keys too: a lookup racing this must not put
        # the enabled answer back (re-enabling deletes them again).
        await auth_cache(app).tombstone(*keys)
        await revoke_user_sessions(app, user_id, reason=reason)
        await app.hub.disconnect(user_id=user_id, code=CLOSE_SESSION_ENDED, reason="Account disabled")
    else:
        await auth_cache(app).delete(*keys)
    if changed:
        await audit_log.audit(app, handler, audit_log.USER_ENABLED if active else audit_log.USER_DISABLED,
                              user_id=user_id, actor_id=actor_id)
    return changed


# ---------------------------------------------------------------------------
# the hot path
# ---------------------------------------------------------------------------


def _load_session(session_id: str) -> dict[str, Any] | None:
    row = (Session.select(Session, User, Role).join(User).join(Role)
           .where(Session.id == session_id).first())
    if row is None or not row.is_active or not row.user.is_active:
        return None
    principal = principal_of(row.user, row.user.role)
    principal["sexp"] = _epoch(row.expires_at)
    return principal


async def session_principal(app: Any, session_id: str, user_id: str) -> dict[str, Any]:
    """Who session ``session_id`` authenticates, if it is still active and belongs to
    ``user_id`` (the token's ``sub``); ``Unauthorized`` otherwise. Cached (see ``cache``)."""
    cache = auth_cache(app)
    key = session_cache_key(session_id)
    principal = await cache.get(key)
    if principal is not None and principal.get("revoked"):
        raise Unauthorized("The session has ended; sign in again")
    if principal is None or principal.get("sexp", 0) <= time.time():
        principal = await app.db.run(_load_session, session_id)
        if principal is None:
            raise Unauthorized("The session has ended; sign in again")
        await cache.set(key, principal)
    if principal.get("uid") != user_id:
        raise Unauthorized("Invalid token")
    return principal

