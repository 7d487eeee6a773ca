"""The typed errors of the API and the one place they become the error envelope.

Every failure a client can see is an ``ApiError`` subclass carrying its HTTP status and
machine code. REST handlers and WebSocket events raise them; ``ApiHandler.write_error``
and the socket dispatcher turn them into JSON. Nothing else decides a status code.
"""

from __future__ import annotations

from typing import Any

import peewee
import tornado.web

__all__ = [
    "ApiError", "ValidationFailed", "Unauthorized", "TokenExpired", "Forbidden", "NotFound",
    "MethodNotAllowed", "UnknownEvent", "Conflict", "PayloadTooLarge", "UnsupportedMediaType", "RateLimited",
    "QuotaExceeded", "InternalError", "Unavailable", "error_for_status", "as_api_error",
]


class ApiError(Exception):
    """An error with a status, a stable ``code`` for machines and a message for people."""

    status: int = 500
    code: str = "INTERNAL"
    message: str = "Internal server error"
    #: Seconds to wait before trying again (``Retry-After``; ``retryAfter`` on sockets), if any.
    retry_after: int | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or type(self).message
        self.details = details
        self.headers = dict(headers or {})
        super().__init__(self.message)

    def _set_retry_after(self, seconds: float) -> None:
        self.retry_after = max(1, int(seconds + 0.999))
        self.headers.setdefault("Retry-After", str(self.retry_after))

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {"success": False, "error": self.message, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


class ValidationFailed(ApiError):
    status, code, message = 400, "VALIDATION_FAILED", "Validation failed"


class Unauthorized(ApiError):
    status, code, message = 401, "UNAUTHORIZED", "Authentication required"


class TokenExpired(ApiError):
    status, code, message = 401, "TOKEN_EXPIRED", "Token expired"


class Forbidden(ApiError):
    status, code, message = 403, "FORBIDDEN", "You do not have permission to do this"


class NotFound(ApiError):
    status, code, message = 404, "NOT_FOUND", "Not found"


class MethodNotAllowed(ApiError):
    status, code, message = 405, "METHOD_NOT_ALLOWED", "Method not allowed"


class UnknownEvent(ApiError):
    """A WebSocket frame whose ``type`` no core or plugin handler declares."""

    status, code, message = 400, "UNKNOWN_EVENT", "Unknown event type"


class Conflict(ApiError):
    status, code, message = 409, "CONFLICT", "Conflict"


class PayloadTooLarge(ApiError):
    status, code, message = 413, "PAYLOAD_TOO_LARGE", "Request body too large"


class UnsupportedMediaType(ApiError):
    status, code, message = 415, "UNSUPPORTED_MEDIA_TYPE", "Unsupported media type"


class RateLimited(ApiError):
    status, code, message = 429, "RATE_LIMITED", "Too many requests"

    def __init__(self, message: str | None = None, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self._set_retry_after(retry_after)


class QuotaExceeded(ApiError):
    status, code, message = 429, "QUOTA_EXCEEDED", "Quota exceeded"


class InternalError(ApiError):
    status, code, message = 500, "INTERNAL", "Internal server error"


class Unavailable(ApiError):
    """A dependency (the database) is away or busy: the same request may well succeed soon."""

    status, code, message = 503, "UNAVAILABLE", "Service temporarily unavailable"
    #: An outage's first seconds, or a queue for connections, usually clear within one.
    RETRY_AFTER = 1

    def __init__(self, message: str | None = None, *, retry_after: float = RETRY_AFTER, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self._set_retry_after(retry_after)


_BY_STATUS = {cls.status: cls for cls in (
    ValidationFailed, Unauthorized, Forbidden, NotFound, MethodNotAllowed, Conflict,
    PayloadTooLarge, UnsupportedMediaType, InternalError, Unavailable,
)}


def error_for_status(status: int, message: str | None = None) -> ApiError:
    """The ``ApiError`` for a bare HTTP status (Tornado's own 404/405/400s reach us this way)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ValidationFailed if 400 <= status < 500 else InternalError
    error = cls(message)
    error.status = status
    return error


def as_api_error(exc_info: Any, status_code: int) -> ApiError:
    """The ``ApiError`` a failure is shown to the client as."""
    error = exc_info[1] if exc_info else None
    if isinstance(error, ApiError):
        return error
    if isinstance(error, peewee.IntegrityError):
        return Conflict("This conflicts with an existing record")
    if isinstance(error, tornado.web.HTTPError):
        return error_for_status(error.status_code, error.reason if error.status_code < 500 else None)
    return error_for_status(status_code)
