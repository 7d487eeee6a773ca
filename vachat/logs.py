"""Logging: JSON lines to stdout and to daily-rotated files, secrets redacted everywhere.

``configure_logging`` installs the handlers once per process; ``log_request`` is the
application's ``log_function`` and writes the one access-log line each request gets.
Redaction happens in a filter on every handler, so no code path can log a password, a token
or a key by accident — including exception messages and ``extra`` fields.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from pathlib import Path
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from .config import make_private_dir

__all__ = ["configure_logging", "log_request", "redact", "RedactingFilter"]

access_log = logging.getLogger("vachat.access")

# Field names whose values are never logged, whatever their shape.
SENSITIVE_KEYS = re.compile(
    r"pass(word)?|secret|token|api[_-]?key|authorization|cookie|credential|private[_-]?key",
    re.IGNORECASE,
)
REDACTED = "[REDACTED]"
_PATTERNS = [
    # Authorization headers and bearer tokens
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    # JWTs anywhere (three base64url segments starting with a JSON header)
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    # key=value and "key": "value" forms for sensitive keys
    (re.compile(r"(?i)([\"']?(?:[\w-]*(?:password|passwd|secret|token|api[_-]?key|authorization)[\w-]*)[\"']?\s*[:=]\s*)"
                r"(\"[^\"]*\"|'[^']*'|[^\s,;&}]+)"), r"\1" + REDACTED),
    # passwords inside URLs
    (re.compile(r"(://[^:/@\s]*:)[^@\s]+@"), r"\1" + REDACTED + "@"),
    # vachat API keys
    (re.compile(r"\bvak_[A-Za-z0-9_-]{8,}"), REDACTED),
    # one-time tokens in the address of the pages mailed links open (accounts.pages)
    (re.compile(r"(/(?:verify-email|reset-password)/)[A-Za-z0-9_-]{8,}"), r"\1" + REDACTED),
]
# Log files rotate at midnight; errors are kept this many times longer than the rest, since
# they are what someone comes looking for after the fact.
ERROR_RETENTION_FACTOR = 6
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_installed: list[logging.Handler] = []


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if SENSITIVE_KEYS.search(key):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value("", v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Rewrites each record's message, arguments, extras and exception text without secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                setattr(record, key, _redact_value(key, value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None  # the formatter would otherwise re-render it unredacted
        return True


def _formatter() -> JsonFormatter:
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


def configure_logging(level: str = "INFO", log_dir: str | Path | None = None, retention_days: int = 14,
                      stream: Any = None) -> None:
    """Install the JSON handlers on the root logger (replacing those installed before).

    ``stream`` defaults to stdout (the server's log); commands whose stdout is their output
    (``plugins --json``) log to stderr instead."""
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
        handler.close()
    _installed.clear()

    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stdout)]
    if log_dir:
        directory = Path(log_dir)
        make_private_dir(directory)
        handlers.append(logging.handlers.TimedRotatingFileHandler(
            directory / "vachat.log", when="midnight", backupCount=retention_days, encoding="utf-8", utc=True))
        errors = logging.handlers.TimedRotatingFileHandler(
            directory / "error.log", when="midnight", backupCount=retention_days * ERROR_RETENTION_FACTOR,
            encoding="utf-8", utc=True)
        errors.setLevel(logging.ERROR)
        handlers.append(errors)
    for handler in handlers:
        handler.setFormatter(_formatter())
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
        _installed.append(handler)
    root.setLevel(level)
    # Tornado's own access log would duplicate ours.
    logging.getLogger("tornado.access").disabled = True
    for noisy in ("peewee", "peewee_migrate"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(level)))


def log_request(handler: Any) -> None:
    """The access-log line and request metrics for one finished request."""
    request = handler.request
    status = handler.get_status()
    duration = request.request_time()
    application = handler.application
    route = application.route_of(handler)
    actor = getattr(handler, "actor", None)
    application.metrics.observe_request(request.method, route, status, duration)
    level = logging.INFO if status < 500 else logging.ERROR
    if not access_log.isEnabledFor(level):
        return
    access_log.log(level, "%s %s %s", request.method, route, status, extra={
        "method": request.method,
        "route": route,
        "path": request.path,
        "status": status,
        "durationMs": round(duration * 1000, 2),
        "userId": getattr(actor, "id", None),
        "requestId": getattr(handler, "request_id", None) if hasattr(handler, "request_id") else None,
        "ip": getattr(handler, "client_ip", request.remote_ip),
    })
