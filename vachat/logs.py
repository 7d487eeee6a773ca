"""Logging: JSON lines to stdout and to daily-rotated files, secrets redacted everywhere.

``configure_logging`` installs the handlers once per process; ``log_request`` is the
application's ``log_function`` and writes the one access-log line each request gets.
Redaction happens in a filter on every handler, so no code path can log a password, a token
or a key by accident — including exception messages and ``extra`` fields. A logged string
field is cut to ``MAX_LOGGED_TEXT`` characters, and every redaction pattern is linear in its
input, so no request, however long its path or headers, makes logging it slow.
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

__all__ = ["configure_logging", "log_request", "redact", "truncate", "RedactingFilter", "MAX_LOGGED_TEXT"]

access_log = logging.getLogger("vachat.access")

# Field names whose values are never logged, whatever their shape.
SENSITIVE_KEYS = re.compile(
    r"pass(word)?|secret|token|api[_-]?key|authorization|cookie|credential|private[_-]?key",
    re.IGNORECASE,
)
REDACTED = "[REDACTED]"
# Every pattern below runs on text that may come from a request (a path, a header, an error
# message), so each must take time linear in the text: a pattern that may start a match at
# every character of a long run and scan the rest of the run from each (``[\w-]*password``)
# held the IOLoop for 47 s on one 30,000-character path. So each pattern starts on a keyword
# or at the start of a run (a look-behind refuses starts inside one), and the runs it scans
# after a keyword are bounded.
#: Characters of a key around a sensitive word (``X-Api-Key-Id``), and of a quoted value.
REDACT_KEY_AFFIX = 64
REDACT_QUOTED_VALUE = 1024
_TOKEN_RUN = "A-Za-z0-9_-"  # base64url, the alphabet of JWT segments and API keys
_SENSITIVE_WORD = r"(?:password|passwd|secret|token|api[_-]?key|authorization)"
_PATTERNS = [
    # Authorization headers and bearer tokens
    (re.compile(r"(?i)\b(bearer|basic)\s{1,16}[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    # JWTs anywhere (three base64url segments starting with a JSON header)
    (re.compile(rf"(?<![{_TOKEN_RUN}])eyJ[{_TOKEN_RUN}]+\.[{_TOKEN_RUN}]+\.[{_TOKEN_RUN}]*"), REDACTED),
    # key=value and "key": "value" forms for sensitive keys: the match starts on the sensitive
    # word (whatever precedes it in the key stays, and is not the secret)
    (re.compile(rf"(?i)({_SENSITIVE_WORD}[\w-]{{0,{REDACT_KEY_AFFIX}}}[\"']?\s{{0,16}}[:=]\s{{0,16}})"
                rf"(\"[^\"]{{0,{REDACT_QUOTED_VALUE}}}\"?|'[^']{{0,{REDACT_QUOTED_VALUE}}}'?|[^\s,;&}}]+)"),
     r"\1" + REDACTED),
    # passwords inside URLs (user info holds no "/" unescaped, so a run ends at the next one)
    (re.compile(r"(://[^:/@\s]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
    # vachat API keys
    (re.compile(rf"(?<![{_TOKEN_RUN}])vak_[{_TOKEN_RUN}]{{8,}}"), REDACTED),
    # one-time tokens in the address of the pages mailed links open (accounts.pages)
    (re.compile(r"(/(?:verify-email|reset-password)/)[A-Za-z0-9_-]{8,}"), r"\1" + REDACTED),
]
#: Characters of one logged string field (a request's path, a message, an ``extra`` value)
#: kept in a log line; the rest is cut and marked. A log line is for people and a path of
#: 60,000 characters tells no more than its first 2,048; it also bounds the redaction's work.
MAX_LOGGED_TEXT = 2048
TRUNCATED_MARK = "…[truncated]"
# Log files rotate at midnight; errors are kept this many times longer than the rest, since
# they are what someone comes looking for after the fact.
ERROR_RETENTION_FACTOR = 6
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_installed: list[logging.Handler] = []


def truncate(text: str, limit: int = MAX_LOGGED_TEXT) -> str:
    """``text`` cut to ``limit`` characters (and marked so), for a log line."""
    return text if len(text) <= limit else text[:limit] + TRUNCATED_MARK


def redact(text: str) -> str:
    """``text`` without the secrets it may hold (linear in its length: see ``_PATTERNS``)."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if SENSITIVE_KEYS.search(key):
        return REDACTED
    if isinstance(value, str):
        return redact(truncate(value))
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
        record.msg = redact(truncate(message))
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
