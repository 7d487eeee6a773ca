"""Configuration: defaults, an override file, environment variables, all typed and checked.

Precedence, lowest first: ``conf/default.toml``, the file named by ``VACHAT_CONFIG``, then
environment variables. Every value is converted and validated once, at start-up; a bad value or
an unknown key in a file stops the process with a message that names it and where it came from.

Runtime state (the SQLite file, uploads, logs, generated secrets) lives under the data directory,
``VACHAT_DATA_DIR``, by default ``./var``; relative paths are taken from the working directory,
never from where vachat is installed.

This module must never import the rest of vachat (but the leaf ``resources``): everything else
imports it.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .resources import core_resource

__all__ = ["ConfigError", "Rate", "Settings", "load_settings", "make_private_dir",
           "PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE"]


DEFAULT_CONFIG_FILE = core_resource("conf/default.toml")

ENVIRONMENTS = ("development", "production", "test")
# Shorter secrets are refused in production: HS256 wants at least as many bytes as its output.
MIN_SECRET_BYTES = 32
# The cost factors bcrypt accepts at all (2^4 to 2^31 rounds): anything else makes every
# hash and check raise, which would turn each sign-in into a 500.
BCRYPT_MIN_ROUNDS, BCRYPT_MAX_ROUNDS = 4, 31
# Below this cost a leaked hash falls to an offline guesser in hours (OWASP asks for 10 or
# more); fine for tests, refused in production.
BCRYPT_MIN_PRODUCTION_ROUNDS = 10


# What holds secrets or password hashes (generated secrets, the SQLite database, logs) is
# readable by the server's own user only.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private_dir(path: Path, *, tighten: bool = False) -> None:
    """Create ``path`` and any missing parent as ``PRIVATE_DIR_MODE``. An existing directory
    keeps its mode (it may be an operator's) unless ``tighten``: vachat's own data directory."""
    missing = []
    candidate = path
    while not candidate.exists():
        missing.append(candidate)
        candidate = candidate.parent
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        os.chmod(directory, PRIVATE_DIR_MODE)  # mkdir's mode passes through the umask
    if tighten and not missing:
        os.chmod(path, PRIVATE_DIR_MODE)


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and why."""


class StartupRefused(ConfigError):
    """Raised by a plugin's ``vachat_startup`` when the node cannot work with its configuration
    (a bucket that does not exist and cannot be made): start-up stops, and ``vachat serve``
    exits with status 2 and this message, instead of serving without the plugin's resources."""


@dataclass(frozen=True)
class Rate:
    """``count`` events per ``period`` seconds, written ``"100/60s"`` (units s, m, h)."""

    count: int
    period: float

    _PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([smh]?)\s*$")

    @classmethod
    def parse(cls, text: str) -> "Rate":
        match = cls._PATTERN.match(str(text))
        if not match:
            raise ValueError(f"expected COUNT/PERIOD such as 100/60s, got {text!r}")
        count, amount, unit = match.groups()
        seconds = float(amount or 1) * {"": 1, "s": 1, "m": 60, "h": 3600}[unit]
        if int(count) < 1 or seconds <= 0:
            raise ValueError(f"count and period must be positive, got {text!r}")
        return cls(int(count), seconds)

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s"


# ---------------------------------------------------------------------------
# value parsers: each takes what a TOML file or an environment variable holds
# ---------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$", str(value))
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            raise ValueError(f"expected a size such as 10MiB or 1048576, got {value!r}")
        size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if size <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return size


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        items = value
    else:
        items = str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def parse_positive_int(value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {value!r}")
    return number


def parse_positive_float(value: Any) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return number


def parse_bcrypt_rounds(value: Any) -> int:
    rounds = int(value)
    if not BCRYPT_MIN_ROUNDS <= rounds <= BCRYPT_MAX_ROUNDS:
        raise ValueError(f"must be a bcrypt cost from {BCRYPT_MIN_ROUNDS} to {BCRYPT_MAX_ROUNDS}, got {value!r}")
    return rounds


def parse_port(value: Any) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"must be a port number 0-65535, got {value!r}")
    return port


def parse_directory(value: Any) -> Path:
    """A directory, made absolute against the working directory at start-up."""
    text = str(value).strip()
    if not text:
        raise ValueError("must name a directory, got an empty value")
    return Path(text).absolute()


def parse_env(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ENVIRONMENTS:
        raise ValueError(f"must be one of {', '.join(ENVIRONMENTS)}, got {value!r}")
    return text


def parse_log_level(value: Any) -> str:
    text = str(value).strip().upper()
    if text not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value!r}")
    return text


def parse_database_url(value: Any) -> str:
    text = str(value).strip()
    if not text.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ValueError(f"must start with sqlite:/// or postgresql://, got {redact_url(text)!r}")
    return text


def parse_redis_url(value: Any) -> str:
    text = str(value).strip()
    if text and not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"must start with redis://, rediss:// or unix://, got {redact_url(text)!r}")
    return text


def parse_smtp_url(value: Any) -> str:
    text = str(value).strip()
    if text and not text.startswith(("smtp://", "smtps://")):
        raise ValueError(f"must start with smtp:// or smtps://, got {redact_url(text)!r}")
    return text


def parse_networks(value: Any) -> list[str]:
    networks = parse_list(value)
    for network in networks:
        ipaddress.ip_network(network, strict=False)  # raises ValueError with a clear message
    return networks


def parse_public_url(value: Any) -> str:
    text = str(value).strip()
    if text and not re.match(r"^https?://[^/\s]+", text):
        raise ValueError(f"must be an http:// or https:// URL, got {text!r}")
    return text.rstrip("/")


def parse_link_template(value: Any) -> str:
    text = str(value).strip()
    if text and (not re.match(r"^https?://[^/\s]+", text) or "{token}" not in text):
        raise ValueError(f"must be an http(s):// URL containing {{token}}, got {text!r}")
    return text


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe for logs and error messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


@dataclass(frozen=True)
class Option:
    """One setting: where it lives in TOML, which variable overrides it, how to read it."""

    attr: str
    section: str
    key: str
    env: str
    parse: Callable[[Any], Any]
    secret: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("host", "server", "host", "HOST", str),
    Option("port", "server", "port", "PORT", parse_port),
    Option("env", "server", "env", "VACHAT_ENV", parse_env),
    Option("trusted_proxies", "server", "trusted_proxies", "TRUSTED_PROXIES", parse_networks),
    Option("max_json_body", "server", "max_json_body", "MAX_JSON_BODY", parse_size),
    Option("http_idle_timeout", "server", "idle_timeout", "HTTP_IDLE_TIMEOUT", parse_positive_float),
    Option("http_body_timeout", "server", "body_timeout", "HTTP_BODY_TIMEOUT", parse_positive_float),
    Option("shutdown_grace", "server", "shutdown_grace", "SHUTDOWN_GRACE", parse_positive_float),
    Option("executor_threads", "server", "executor_threads", "EXECUTOR_THREADS", parse_positive_int),
    Option("auto_migrate", "server", "auto_migrate", "AUTO_MIGRATE", parse_bool),
    Option("data_dir", "server", "data_dir", "VACHAT_DATA_DIR", parse_directory),
    Option("database_url", "database", "url", "DATABASE_URL", parse_database_url, secret=True),
    Option("database_pool_size", "database", "pool_size", "DATABASE_POOL_SIZE", parse_positive_int),
    Option("redis_url", "redis", "url", "REDIS_URL", parse_redis_url, secret=True),
    Option("jwt_secret", "security", "jwt_secret", "JWT_SECRET", str, secret=True),
    Option("jwt_refresh_secret", "security", "jwt_refresh_secret", "JWT_REFRESH_SECRET", str, secret=True),
    Option("cors_origins", "security", "cors_origin", "CORS_ORIGIN", parse_list),
    Option("bcrypt_rounds", "security", "bcrypt_rounds", "BCRYPT_ROUNDS", parse_bcrypt_rounds),
    Option("access_token_ttl", "security", "access_token_ttl", "ACCESS_TOKEN_TTL", parse_positive_int),
    Option("refresh_token_ttl", "security", "refresh_token_ttl", "REFRESH_TOKEN_TTL", parse_positive_int),
    Option("rate_limit_global", "security", "rate_limit_global", "RATE_LIMIT_GLOBAL", Rate.parse),
    Option("rate_limit_auth", "security", "rate_limit_auth", "RATE_LIMIT_AUTH", Rate.parse),
    Option("log_level", "logging", "level", "LOG_LEVEL", parse_log_level),
    Option("log_dir", "logging", "dir", "LOG_DIR", str),
    Option("log_retention_days", "logging", "retention_days", "LOG_RETENTION_DAYS", parse_positive_int),
    Option("smtp_url", "email", "smtp_url", "SMTP_URL", parse_smtp_url, secret=True),
    Option("email_from", "email", "from", "EMAIL_FROM", str),
    Option("public_url", "email", "public_url", "PUBLIC_URL", parse_public_url),
    Option("email_verify_url", "email", "verify_url", "EMAIL_VERIFY_URL", parse_link_template),
    Option("email_reset_url", "email", "reset_url", "EMAIL_RESET_URL", parse_link_template),
    Option("ws_max_message_size", "websocket", "max_message_size", "WS_MAX_MESSAGE_SIZE", parse_size),
    Option("ws_ping_interval", "websocket", "ping_interval", "WS_PING_INTERVAL", parse_positive_float),
    Option("ws_ping_timeout", "websocket", "ping_timeout", "WS_PING_TIMEOUT", parse_positive_float),
    Option("ws_auth_timeout", "websocket", "auth_timeout", "WS_AUTH_TIMEOUT", parse_positive_float),
    Option("ws_outbound_limit", "websocket", "outbound_limit", "WS_OUTBOUND_LIMIT", parse_size),
    Option("ws_rate_limit", "websocket", "rate_limit", "WS_RATE_LIMIT", Rate.parse),
    Option("ws_max_per_ip", "websocket", "max_per_ip", "WS_MAX_PER_IP", parse_positive_int),
    Option("ws_max_per_user", "websocket", "max_per_user", "WS_MAX_PER_USER", parse_positive_int),
    Option("plugins_enabled", "plugins", "enabled", "VACHAT_PLUGINS", parse_list),
    Option("plugins_strict", "plugins", "strict", "VACHAT_PLUGINS_STRICT", parse_bool),
    Option("plugin_modules", "plugins", "modules", "VACHAT_PLUGIN_MODULES", parse_list),
)
OPTIONS_BY_ATTR = {option.attr: option for option in OPTIONS}

# Settings whose default is a place in the data directory, so that moving it moves them all.
DATA_DIR_DEFAULTS: dict[str, Callable[[Path], str]] = {
    "database_url": lambda data_dir: f"sqlite:///{data_dir / 'vachat.db'}",
    "log_dir": lambda data_dir: str(data_dir / "log"),
}


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one server process. Immutable once loaded."""

    host: str = "0.0.0.0"
    port: int = 3000
    env: str = "development"
    trusted_proxies: list[str] = field(default_factory=list)
    max_json_body: int = 1024 * 1024
    # Seconds a connection may sit idle (or take to send its headers), and to send a body.
    http_idle_timeout: float = 60.0
    http_body_timeout: float = 60.0
    shutdown_grace: float = 30.0
    executor_threads: int = 8
    auto_migrate: bool | None = None
    # Runtime state; DATABASE_URL and LOG_DIR (and plugins' files, such as uploads) default to
    # places inside it.
    data_dir: Path = Path("var")
    database_url: str = "sqlite:///var/vachat.db"
    database_pool_size: int = 8
    redis_url: str = ""
    jwt_secret: str = ""
    jwt_refresh_secret: str = ""
    cors_origins: list[str] = field(default_factory=list)
    bcrypt_rounds: int = 12
    # Seconds an access token (15 min) and a refresh token (7 days) are valid.
    access_token_ttl: int = 15 * 60
    refresh_token_ttl: int = 7 * 24 * 3600
    rate_limit_global: Rate = Rate(100, 60)
    rate_limit_auth: Rate = Rate(5, 900)
    log_level: str = "INFO"
    log_dir: str = "var/log"
    log_retention_days: int = 14
    smtp_url: str = ""
    email_from: str = "vachat <no-reply@localhost>"
    # Empty: the server's own address (see _with_public_url).
    public_url: str = ""
    email_verify_url: str = ""
    email_reset_url: str = ""
    ws_max_message_size: int = 64 * 1024
    ws_ping_interval: float = 25.0
    ws_ping_timeout: float = 20.0
    ws_auth_timeout: float = 10.0
    ws_outbound_limit: int = 1024 * 1024
    ws_rate_limit: Rate = Rate(60, 10)
    # Open sockets per client address (IPv6 per /64) and per user, on one node; see conf/default.toml.
    ws_max_per_ip: int = 100
    ws_max_per_user: int = 20
    plugins_enabled: list[str] = field(default_factory=list)
    plugins_strict: bool = False
    # Importable modules loaded as plugins without being installed (development, benchmarks).
    plugin_modules: list[str] = field(default_factory=list)
    # [plugins.<name>] tables, handed to each plugin as its own section.
    plugin_sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The environment the settings were read from: plugins map their own variables
    # (``x-env`` in their config schema) from it. Never shown (it may hold secrets).
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def is_development(self) -> bool:
        return self.env == "development"

    @property
    def should_auto_migrate(self) -> bool:
        return self.auto_migrate if self.auto_migrate is not None else not self.is_production

    def plugin_config(self, name: str) -> Mapping[str, Any]:
        """The ``[plugins.<name>]`` table (empty when absent)."""
        return self.plugin_sections.get(name, {})

    def resolve_path(self, path: str | Path) -> Path:
        """A configured path, relative ones taken from the working directory."""
        return Path(path).absolute()

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def public_summary(self) -> dict[str, Any]:
        """Every setting with secrets masked, for `run.py --print-config` and start-up logs."""
        summary: dict[str, Any] = {}
        for option in OPTIONS:
            value = getattr(self, option.attr)
            if option.secret and value:
                value = redact_url(value) if "://" in str(value) else "***"
            summary[option.attr] = str(value) if isinstance(value, (Rate, Path)) else value
        return summary


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"configuration file {path} is not valid TOML: {error}") from None


def _check_known_keys(document: Mapping[str, Any], path: Path | str) -> None:
    """Refuse a section or key that no setting reads: a misspelt one would otherwise be ignored
    without a word, and the server would run on the default it was meant to change.

    ``[plugins.<name>]`` tables are left to their plugins, which check their own sections.
    """
    known: dict[str, set[str]] = {}
    for option in OPTIONS:
        known.setdefault(option.section, set()).add(option.key)
    for section, table in document.items():
        if section not in known:
            raise ConfigError(f"unknown section [{section}] in {path}{_did_you_mean(section, known)}")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{section} in {path} must be a [{section}] table, got {table!r}")
        for key, value in table.items():
            if section == "plugins" and key not in known[section] and isinstance(value, Mapping):
                continue
            if key not in known[section]:
                raise ConfigError(f"unknown key {section}.{key} in {path}"
                                  f"{_did_you_mean(key, known[section], prefix=section + '.')}")


def _did_you_mean(name: str, candidates: Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from the files and ``environ`` (default ``os.environ``).

    ``overrides`` maps attribute names to raw values and wins over everything; tests use it.
    """
    environ = os.environ if environ is None else environ
    raw = _read_toml(DEFAULT_CONFIG_FILE)
    _check_known_keys(raw, DEFAULT_CONFIG_FILE)
    sources = {option.attr: str(DEFAULT_CONFIG_FILE) for option in OPTIONS}
    extra_file = environ.get("VACHAT_CONFIG")
    if extra_file:
        extra = _read_toml(Path(extra_file))
        _check_known_keys(extra, extra_file)
        raw = _merge(raw, extra)
        for option in OPTIONS:
            if option.key in extra.get(option.section, {}):
                sources[option.attr] = extra_file

    values: dict[str, Any] = {}
    for option in OPTIONS:
        value = raw.get(option.section, {}).get(option.key)
        source = sources[option.attr]
        if option.env in environ:
            value, source = environ[option.env], f"environment variable {option.env}"
        if overrides and option.attr in overrides:
            value, source = overrides[option.attr], "test overrides"
        if value is None:
            continue
        try:
            values[option.attr] = option.parse(value)
        except (ValueError, TypeError) as error:
            raise ConfigError(
                f"invalid {option.env} ({option.section}.{option.key}) from {source}: {error}"
            ) from None

    data_dir = values.setdefault("data_dir", parse_directory(Settings.data_dir))
    for attr, default_inside in DATA_DIR_DEFAULTS.items():
        values.setdefault(attr, default_inside(data_dir))

    plugin_sections = {
        name: dict(section)
        for name, section in raw.get("plugins", {}).items()
        if isinstance(section, Mapping)
    }
    settings = Settings(**values, plugin_sections=plugin_sections, environ=dict(environ))
    if settings.ws_ping_timeout > settings.ws_ping_interval:
        # Tornado caps the timeout at the interval (with a warning on every start); say so once, here.
        raise ConfigError(f"WS_PING_TIMEOUT ({settings.ws_ping_timeout:g}s) must not exceed "
                          f"WS_PING_INTERVAL ({settings.ws_ping_interval:g}s)")
    if settings.refresh_token_ttl <= settings.access_token_ttl:
        # A refresh token that dies first could never renew the access token it came with.
        raise ConfigError(f"REFRESH_TOKEN_TTL ({settings.refresh_token_ttl}s) must be longer than "
                          f"ACCESS_TOKEN_TTL ({settings.access_token_ttl}s)")
    if settings.is_production and settings.bcrypt_rounds < BCRYPT_MIN_PRODUCTION_ROUNDS:
        raise ConfigError(f"BCRYPT_ROUNDS ({settings.bcrypt_rounds}) must be at least "
                          f"{BCRYPT_MIN_PRODUCTION_ROUNDS} in production")
    return _with_secrets(_with_public_url(settings))


def _with_public_url(settings: Settings) -> Settings:
    """``PUBLIC_URL`` left empty means this server itself, so mailed links work out of the box:
    ``http://<host>:<port>``, with ``localhost`` for a wildcard host."""
    if settings.public_url:
        return settings
    host = settings.host if settings.host not in ("", "0.0.0.0", "::", "[::]") else "localhost"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return settings.replace(public_url=f"http://{host}:{settings.port}")


def _with_secrets(settings: Settings) -> Settings:
    """Check the JWT secrets; outside production, generate missing ones and remember them."""
    if settings.is_production:
        for option in (OPTIONS_BY_ATTR["jwt_secret"], OPTIONS_BY_ATTR["jwt_refresh_secret"]):
            secret = getattr(settings, option.attr)
            if len(secret.encode()) < MIN_SECRET_BYTES or secret.lower().startswith(("change", "default", "secret")):
                raise ConfigError(
                    f"{option.env} must be set to a random value of at least {MIN_SECRET_BYTES} bytes "
                    f"in production (generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
                )
        if settings.jwt_secret == settings.jwt_refresh_secret:
            raise ConfigError("JWT_SECRET and JWT_REFRESH_SECRET must differ in production")
        return settings
    if settings.jwt_secret and settings.jwt_refresh_secret:
        return settings
    remembered = _remembered_secrets(settings.resolve_path(settings.data_dir) / "secrets.json")
    return settings.replace(
        jwt_secret=settings.jwt_secret or remembered["jwt_secret"],
        jwt_refresh_secret=settings.jwt_refresh_secret or remembered["jwt_refresh_secret"],
    )


def _remembered_secrets(path: Path) -> dict[str, str]:
    """Development secrets, generated once and kept so restarts do not sign everyone out.
    The file is ``PRIVATE_FILE_MODE`` in a ``PRIVATE_DIR_MODE`` data directory, whatever
    modes an older version (or a copy) left them with."""
    try:
        make_private_dir(path.parent, tighten=True)
        stored = json.loads(path.read_text())
        if isinstance(stored, dict) and all(
            isinstance(stored.get(key), str) and len(stored[key]) >= MIN_SECRET_BYTES
            for key in ("jwt_secret", "jwt_refresh_secret")
        ):
            os.chmod(path, PRIVATE_FILE_MODE)
            return stored
    except (OSError, ValueError):
        pass
    generated = {key: secrets.token_urlsafe(48) for key in ("jwt_secret", "jwt_refresh_secret")}
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        # O_CREAT's mode only applies to a new file: an existing 0644 one must be tightened.
        os.fchmod(descriptor, PRIVATE_FILE_MODE)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(generated, handle)
    except OSError:
        pass  # a read-only data directory still serves; tokens just do not survive a restart
    return generated
