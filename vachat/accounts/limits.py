"""RATE_LIMIT_AUTH: the limit on login, register, forgot- and reset-password (SPEC §8).

Each action has its own buckets, one per client address and one per account (the lowercased
e-mail, hashed so the limiter's store never holds addresses), both at ``RATE_LIMIT_AUTH``.
The address is ``handler.client_limit_subject`` (IPv6 counted by /64), from ``client_ip``,
which honours ``X-Forwarded-For`` only from ``TRUSTED_PROXIES``: a spoofed header changes nothing. Every attempt counts, successful or
not; a refused one is not counted, so a client that waits ``Retry-After`` gets in again.

The limiter is ``app.limiter`` (Redis-backed when Redis is configured, in-process otherwise).
This module must never raise anything but ``RateLimited``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import RateLimited
from .models import normalize_email

__all__ = ["check_auth_limits", "account_key"]


def account_key(email: str) -> str:
    """The limiter's name for an account: stable, case-insensitive, not the address itself."""
    return hashlib.sha256(normalize_email(email).encode("utf-8")).hexdigest()[:32]


def _action_of(handler: Any) -> str:
    path = getattr(getattr(handler, "request", None), "path", "") or ""
    return path.rstrip("/").rsplit("/", 1)[-1] or "auth"


async def check_auth_limits(handler: Any, email: str | None, *, action: str | None = None) -> None:
    """Count one attempt of ``action`` (default: the last segment of the request path, e.g.
    ``login``) against the caller's address and, when ``email`` is given, against that
    account. Raises ``RateLimited`` (429 with ``Retry-After``) when either is exhausted."""
    app = handler.application
    rate = app.config.rate_limit_auth
    action = action or _action_of(handler)
    decision = await app.limiter.hit(f"auth:{action}:ip:{handler.client_limit_subject}", rate)
    if not decision.allowed:
        raise RateLimited("Too many attempts; try again later", retry_after=decision.retry_after)
    if email:
        decision = await app.limiter.hit(f"auth:{action}:account:{account_key(email)}", rate)
        if not decision.allowed:
            raise RateLimited("Too many attempts for this account; try again later",
                              retry_after=decision.retry_after)
