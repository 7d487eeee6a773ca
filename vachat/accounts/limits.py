"""RATE_LIMIT_AUTH: the limit on login, register, forgot- and reset-password.

Each action has its own buckets, one per client address and one per account (the normalised
e-mail, hashed so the limiter's store never holds addresses), both at ``RATE_LIMIT_AUTH``.
The address is ``handler.client_limit_subject`` (IPv6 counted by /64), from ``client_ip``,
which honours ``X-Forwarded-For`` only from
``TRUSTED_PROXIES``: a spoofed header changes nothing. A refused attempt is not counted, so
a client that waits ``Retry-After`` gets in again.

Register, forgot- and reset-password count every attempt (each one sends mail, creates an
account or spends a token). Login counts only failures, in every environment: the limit is
against guessing passwords, and someone who knows theirs must not lock themselves out by
signing in a few times. The attempt is still counted *before* the password is checked and
given back (``AuthAttempt.succeeded``) once it matched, so a burst of concurrent guesses
cannot all pass an empty bucket before any of them fails.

The limiter is ``app.limiter`` (Redis-backed when Redis is configured, in-process otherwise).
This module must never raise anything but ``RateLimited``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..errors import RateLimited
from .models import normalize_email

__all__ = ["check_auth_limits", "account_key", "AuthAttempt"]


def account_key(email: str) -> str:
    """The limiter's name for an account: stable, case-insensitive, not the address itself."""
    return hashlib.sha256(normalize_email(email).encode("utf-8")).hexdigest()[:32]


def _action_of(handler: Any) -> str:
    path = getattr(getattr(handler, "request", None), "path", "") or ""
    return path.rstrip("/").rsplit("/", 1)[-1] or "auth"


@dataclass
class AuthAttempt:
    """The buckets one attempt was counted in, so a successful sign-in can give them back."""

    limiter: Any
    rate: Any
    keys: list[str] = field(default_factory=list)

    async def succeeded(self) -> None:
        """The attempt was not a failed guess: refund it in every bucket it was counted in."""
        for key in self.keys:
            await self.limiter.refund(key, self.rate)
        self.keys.clear()


async def check_auth_limits(handler: Any, email: str | None, *, action: str | None = None) -> AuthAttempt:
    """Count one attempt of ``action`` (default: the last segment of the request path, e.g.
    ``login``) against the caller's address and, when ``email`` is given, against that
    account. Raises ``RateLimited`` (429 with ``Retry-After``) when either is exhausted."""
    app = handler.application
    rate = app.config.rate_limit_auth
    action = action or _action_of(handler)
    attempt = AuthAttempt(app.limiter, rate)
    key = f"auth:{action}:ip:{handler.client_limit_subject}"
    decision = await app.limiter.hit(key, rate)
    if not decision.allowed:
        raise RateLimited("Too many attempts; try again later", retry_after=decision.retry_after)
    attempt.keys.append(key)
    if email:
        key = f"auth:{action}:account:{account_key(email)}"
        decision = await app.limiter.hit(key, rate)
        if not decision.allowed:
            raise RateLimited("Too many attempts for this account; try again later",
                              retry_after=decision.retry_after)
        attempt.keys.append(key)
    return attempt
