"""The errors the client raises: one class per error code of the server's envelope.

A REST failure (``{"success": false, "error", "code", "details"?}``) and a WebSocket ``error``
frame (``{code, message, details?}``) both become the ``ApiError`` subclass named by their
``code``, carrying ``code``, ``details`` and, for REST, the HTTP ``status``. Failures that
never reached the server's envelope (a refused connection, a proxy's HTML page) are
``ConnectionFailed``; a server speaking a newer protocol is ``ProtocolMismatch``.

This module imports nothing from the server: the client is a client of the public protocol.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ClientError", "ApiError", "ValidationFailed", "Unauthorized", "TokenExpired", "Forbidden",
    "NotFound", "Conflict", "PayloadTooLarge", "UnsupportedMediaType", "RateLimited", "QuotaExceeded",
    "ServerError", "Unavailable", "ConnectionFailed", "ProtocolMismatch", "error_from_envelope",
]


class ClientError(Exception):
    """Anything the client raises."""


class ApiError(ClientError):
    """The server refused a request; ``code`` is its machine code, ``details`` the per-field
    list of a validation failure, ``status`` the HTTP status (None for a WebSocket error)."""

    code = "ERROR"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None,
                 status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or type(self).code
        self.details = details
        self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = f"{self.message} ({self.code})"
        if isinstance(self.details, list) and self.details:
            fields = "; ".join(f"{item.get('field')} {item.get('message')}" for item in self.details
                               if isinstance(item, dict))
            text += f": {fields}" if fields else ""
        return text


class ValidationFailed(ApiError):
    code = "VALIDATION_FAILED"


class Unauthorized(ApiError):
    code = "UNAUTHORIZED"


class TokenExpired(Unauthorized):
    code = "TOKEN_EXPIRED"


class Forbidden(ApiError):
    code = "FORBIDDEN"


class NotFound(ApiError):
    code = "NOT_FOUND"


class Conflict(ApiError):
    code = "CONFLICT"


class PayloadTooLarge(ApiError):
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ApiError):
    code = "UNSUPPORTED_MEDIA_TYPE"


class RateLimited(ApiError):
    """Too many requests: ``retry_after`` seconds until one is accepted again."""

    code = "RATE_LIMITED"


class QuotaExceeded(ApiError):
    """The day's AI tokens are used up (429 too, but retrying soon cannot help)."""

    code = "QUOTA_EXCEEDED"


class ServerError(ApiError):
    code = "INTERNAL"


class Unavailable(ServerError):
    code = "UNAVAILABLE"


class ConnectionFailed(ClientError):
    """The server could not be reached, or answered with something that is not the API."""


class ProtocolMismatch(ClientError):
    """The server speaks a newer WebSocket protocol than this client understands."""

    def __init__(self, server: Any, client: int) -> None:
        super().__init__(f"The server speaks WebSocket protocol {server}, newer than {client}, the newest "
                         f"this client understands: upgrade vachat's client")
        self.server = server
        self.client = client


_BY_CODE: dict[str, type[ApiError]] = {
    cls.code: cls for cls in (
        ValidationFailed, Unauthorized, TokenExpired, Forbidden, NotFound, Conflict, PayloadTooLarge,
        UnsupportedMediaType, RateLimited, QuotaExceeded, ServerError, Unavailable)
}


def error_from_envelope(body: Any, status: int | None = None, retry_after: float | None = None) -> ApiError:
    """The typed error for a REST error envelope or a WebSocket ``error`` frame's data."""
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("code") or ("INTERNAL" if (status or 500) >= 500 else "ERROR"))
    message = str(body.get("error") or body.get("message") or f"HTTP {status}")
    if retry_after is None and isinstance(body.get("retryAfter"), (int, float)):
        retry_after = float(body["retryAfter"])
    cls = _BY_CODE.get(code, ApiError)
    return cls(message, code=code, details=body.get("details"), status=status, retry_after=retry_after)
