"""RATE_LIMIT_AUTH and RATE_LIMIT_AUTH_ACCOUNT: the limits on login, register and
forgot-password (reset-password, which needs a mailed token, counts per address here and per
account in ``recovery``).

Each action has its own buckets:

- per client address, at ``RATE_LIMIT_AUTH``: one address guessing many accounts;
- per (account, address), at ``RATE_LIMIT_AUTH``: one address guessing one account. This is
  the lock-out a guesser meets, and it is theirs alone: the account's owner, signing in from
  another address, is not locked out by it;
- per account across addresses, at the slower ``RATE_LIMIT_AUTH_ACCOUNT``: a guess spread over
  many addresses is still slowed. Its burst is large enough that a handful of failures, from
  anywhere, never blocks a correct password from an address without failures; only a
  sustained distributed attack exhausts it.

The account is the normalised e-mail, hashed so the limiter's store never holds addresses.
The address is ``handler.client_limit_subject`` (IPv6 counted by /64), from ``client_ip``,
which honours ``X-Forwarded-For`` only from ``TRUSTED_PROXIES``: a spoofed header changes
nothing. A refused attempt is not counted in any bucket, so a client that waits
``Retry-After`` gets in again.

Register and forgot-password count every attempt (each one sends mail or creates an account).
Login counts only failures, in every environment: the limit is against guessing passwords,
and someone who knows theirs must not lock themselves out by signing in a few times. The
attempt is still counted *before* the password is checked and given back
(``AuthAttempt.succeeded``) once it matched, so a burst of concurrent guesses cannot all pass
an empty bucket before any of them fails.

The limiter is ``app.limiter`` (Redis-backed when Redis is configured, in-process otherwise;
every ``auth:`` bucket is protected from eviction there). This module must never raise
anything but ``RateLimited``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..config import Rate
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
    counted: list[tuple[str, Rate]] = field(default_factory=list)

    async def succeeded(self) -> None:
        """The attempt was not a failed guess: refund it in every bucket it was counted in."""
        for key, rate in self.counted:
            await self.limiter.refund(key, rate)
        self.counted.clear()


ADDRESS_REFUSAL = "Too many attempts; try again later"
ACCOUNT_REFUSAL = "Too many attempts for this account; try again later"


async def check_auth_limits(handler: Any, email: str | None, *, action: str | None = None) -> AuthAttempt:
    """Count one attempt of ``action`` (default: the last segment of the request path, e.g.
    ``login``) against the caller's address and, when ``email`` is given, against the
    (account, address) pair and the account. Raises ``RateLimited`` (429 with
    ``Retry-After``) when any is exhausted, having counted the attempt nowhere."""
    app = handler.application
    config = app.config
    action = action or _action_of(handler)
    address = handler.client_limit_subject
    buckets = [(f"auth:{action}:ip:{address}", config.rate_limit_auth, ADDRESS_REFUSAL)]
    if email:
        account = account_key(email)
        buckets += [(f"auth:{action}:pair:{account}:{address}", config.rate_limit_auth, ACCOUNT_REFUSAL),
                    (f"auth:{action}:account:{account}", config.rate_limit_auth_account, ACCOUNT_REFUSAL)]
    attempt = AuthAttempt(app.limiter)
    for key, rate, refusal in buckets:
        decision = await app.limiter.hit(key, rate)
        if not decision.allowed:
            await attempt.succeeded()  # not counted where it passed either
            raise RateLimited(refusal, retry_after=decision.retry_after)
        attempt.counted.append((key, rate))
    return attempt
