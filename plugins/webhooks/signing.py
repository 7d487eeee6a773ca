"""Signing deliveries the Standard Webhooks way, so receivers verify them with an existing
library (``standardwebhooks`` for Python, JavaScript, Go …, or Svix's).

Each request carries ``webhook-id`` (the delivery's id, the same on every attempt, for the
receiver to drop duplicates), ``webhook-timestamp`` (seconds since the epoch, for the receiver
to refuse replays) and ``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256 of
``"{id}.{timestamp}.{body}"`` under the secret. A secret is ``whsec_`` and 24 random bytes in
base64; the key is those bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["new_secret", "signature", "headers_for"]

SECRET_PREFIX = "whsec_"
# 192 bits: the length the Standard Webhooks reference libraries generate.
SECRET_BYTES = 24


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode("utf-8") + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def headers_for(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
        "Content-Type": "application/json",
    }
