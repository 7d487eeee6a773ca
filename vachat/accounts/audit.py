"""The audit log: one row per security-relevant event.

``record(...)`` is a plain synchronous function: call it inside ``app.db.run`` (alone, or
within the same transaction as the change it describes). ``audit(app, handler, ...)`` is the
async convenience for handlers: it fills in the caller's address, user agent and actor.

Action names are the ``AUTH_*`` / ``USER_*`` constants below; plugins may add their own,
namespaced by plugin name (``chat.conversation_deleted``).

This module must never store a password, token or key in ``details``, and never let a failed
audit write fail the request it describes: ``audit`` logs the failure and carries on.
"""

from __future__ import annotations

import logging
from typing import Any

from .models import AuditLog

__all__ = [
    "record", "audit", "request_origin",
    "AUTH_REGISTER", "AUTH_LOGIN", "AUTH_LOGIN_FAILED", "AUTH_LOGOUT", "AUTH_REFRESH_REUSE",
    "AUTH_SESSION_REVOKED", "AUTH_PASSWORD_CHANGED", "AUTH_PASSWORD_RESET",
    "AUTH_PASSWORD_RESET_REQUESTED", "AUTH_EMAIL_VERIFIED", "AUTH_PASSWORD_CHANGE_FAILED",
    "AUTH_PASSWORD_RESET_FAILED", "AUTH_EMAIL_VERIFICATION_FAILED", "AUTH_API_KEY_CREATED",
    "AUTH_API_KEY_DELETED", "USER_ROLE_CHANGED", "USER_DISABLED", "USER_ENABLED", "USER_DELETED",
    "USER_UPDATED", "USER_CREATED", "ROLE_CREATED", "ROLE_UPDATED", "ACCESS_ESCALATION_REFUSED",
]

log = logging.getLogger("vachat.accounts.audit")

AUTH_REGISTER = "auth.register"
AUTH_LOGIN = "auth.login"
AUTH_LOGIN_FAILED = "auth.login_failed"
AUTH_LOGOUT = "auth.logout"
AUTH_REFRESH_REUSE = "auth.refresh_reuse"
AUTH_SESSION_REVOKED = "auth.session_revoked"
AUTH_PASSWORD_CHANGED = "auth.password_changed"
AUTH_PASSWORD_RESET = "auth.password_reset"
AUTH_PASSWORD_RESET_REQUESTED = "auth.password_reset_requested"
AUTH_EMAIL_VERIFIED = "auth.email_verified"
# Failures worth a trail: someone guessing the current password with a stolen session, or
# trying reset and verification tokens (the row never holds the token).
AUTH_PASSWORD_CHANGE_FAILED = "auth.password_change_failed"
AUTH_PASSWORD_RESET_FAILED = "auth.password_reset_failed"
AUTH_EMAIL_VERIFICATION_FAILED = "auth.email_verification_failed"
AUTH_API_KEY_CREATED = "auth.api_key_created"
AUTH_API_KEY_DELETED = "auth.api_key_deleted"
USER_CREATED = "user.created"
USER_UPDATED = "user.updated"
USER_ROLE_CHANGED = "user.role_changed"
USER_DISABLED = "user.disabled"
USER_ENABLED = "user.enabled"
USER_DELETED = "user.deleted"
USER_DELETION_FAILED = "user.deletion_failed"
USER_EXPORTED = "user.exported"
ROLE_CREATED = "role.created"
ROLE_UPDATED = "role.updated"
# An administrative change refused because it would give someone more than the actor holds
# (``delegation``): worth a trail, it is what a stolen delegated account tries first.
ACCESS_ESCALATION_REFUSED = "access.escalation_refused"

# Column widths of AuditLog; longer values are cut rather than failing the insert.
_IP_MAX = 64
_USER_AGENT_MAX = 512


def record(action: str, *, user_id: str | None = None, actor_id: str | None = None,
           ip: str | None = None, user_agent: str | None = None,
           details: dict[str, Any] | None = None) -> AuditLog:
    """Insert one audit row. Synchronous: run it inside ``app.db.run``."""
    return AuditLog.create(
        action=action,
        user_id=user_id,
        actor_id=actor_id,
        ip=ip[:_IP_MAX] if ip else None,
        user_agent=user_agent[:_USER_AGENT_MAX] if user_agent else None,
        details=details or None,
    )


def request_origin(handler: Any) -> tuple[str | None, str | None]:
    """``(client ip, user agent)`` of a REST handler or WebSocket ``EventContext``."""
    if handler is None:
        return None, None
    socket = getattr(handler, "socket", None)  # an EventContext
    source = socket if socket is not None else handler
    ip = getattr(source, "client_ip", None)
    request = getattr(source, "request", None)
    agent = request.headers.get("User-Agent") if request is not None else None
    return ip, agent


async def audit(app: Any, handler: Any, action: str, *, user_id: str | None = None,
                actor_id: str | None = None, ip: str | None = None, user_agent: str | None = None,
                details: dict[str, Any] | None = None) -> None:
    """Record ``action`` off the IOLoop; the address, user agent and actor default to the
    caller of ``handler`` (a REST handler, an ``EventContext`` or None). Never raises."""
    handler_ip, handler_agent = request_origin(handler)
    actor = getattr(handler, "actor", None)
    if actor_id is None and actor is not None:
        actor_id = actor.id
    try:
        await app.db.run(record, action, user_id=user_id, actor_id=actor_id,
                         ip=ip if ip is not None else handler_ip,
                         user_agent=user_agent if user_agent is not None else handler_agent,
                         details=details)
    except Exception:
        log.exception("writing the audit row %s failed", action)
