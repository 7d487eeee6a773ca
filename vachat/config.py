"""Configuration: defaults, an override file, environment variables, all typed and checked.

Every core setting is declared once, in ``schemas/config.json``, the way a plugin declares its
own: TOML section and key, environment variable (``x-env``), the ``Settings`` attribute it
fills (``x-attr``), JSON type and constraints, default and meaning. ``x-format`` names how a
checked value becomes its Python value (a size in bytes, a ``Rate``, an absolute ``Path``).

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
import math
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import jsonschema

from .resources import core_resource

__all__ = ["ConfigError", "Rate", "Settings", "load_settings", "make_private_dir",
           "PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE"]


DEFAULT_CONFIG_FILE = core_resource("conf/default.toml")

# Shorter secrets are refused in production: HS256 wants at least as many bytes as its output.
MIN_SECRET_BYTES = 32
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
# the settings, as declared in schemas/config.json
# ---------------------------------------------------------------------------

#: Every core setting: section and key, environment variable (``x-env``), the ``Settings``
#: attribute it fills (``x-attr``), type, default, constraints, meaning. The one place a core
#: setting is declared; conf/default.toml and the README's table are generated from it
#: (``vachat.config_docs``).
CONFIG_SCHEMA_FILE = core_resource("schemas/config.json")

_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def parse_size(value: Any) -> int:
    """Bytes from ``10MiB``, ``64KiB``, ``1.5GB`` or a plain number."""
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


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe for logs and error messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _from_text(text: str, kinds: tuple[str, ...]) -> Any:
    """What an environment variable (or a string in a file) holds, as the JSON type the
    setting declares: files may write ``port = "3000"`` as the environment must."""
    if "string" in kinds:
        return text
    if "integer" in kinds:
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {text!r}") from None
    if "number" in kinds:
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
    if "boolean" in kinds:
        lowered = text.strip().lower()
        if lowered not in _TRUE + _FALSE:
            raise ValueError(f"expected true or false, got {text!r}")
        return lowered in _TRUE
    if "array" in kinds:
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def _check_network(text: str) -> str:
    ipaddress.ip_network(text, strict=False)  # raises ValueError with a clear message
    return text


# ``x-format``: how a value that passed the schema becomes the Python value ``Settings`` holds.
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "size": parse_size,
    "rate": Rate.parse,
    "directory": lambda value: Path(value).absolute(),
    "base-url": lambda value: value.rstrip("/"),
    "ip-network": _check_network,
}


@dataclass(frozen=True)
class Option:
    """One setting, read from its property in the core's config schema."""

    section: str
    key: str
    schema: Mapping[str, Any]

    @property
    def attr(self) -> str:
        return str(self.schema["x-attr"])

    @property
    def env(self) -> str:
        return str(self.schema["x-env"])

    @property
    def secret(self) -> bool:
        return bool(self.schema.get("writeOnly"))

    @property
    def kinds(self) -> tuple[str, ...]:
        kind = self.schema.get("type", "string")
        return tuple(kind) if isinstance(kind, list) else (kind,)

    def shown(self, value: Any) -> str:
        """``value`` as an error message may show it: never a secret."""
        if not self.secret:
            return repr(value)
        return repr(redact_url(value)) if "://" in str(value) else "a hidden value"

    def parse(self, value: Any) -> Any:
        """``value`` from a file, the environment or a test's overrides, checked against the
        schema and converted; ``ValueError`` says what is wrong with it."""
        if isinstance(value, (Rate, Path)):
            value = str(value)
        if isinstance(value, str):
            value = _from_text(value, self.kinds)
        if isinstance(value, float) and not math.isfinite(value):  # the schema's bounds let nan through
            raise ValueError(f"expected a finite number, got {self.shown(value)}")
        if isinstance(value, str):
            value = value.strip()
            case = self.schema.get("x-case")
            value = value.lower() if case == "lower" else value.upper() if case == "upper" else value
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if error is not None:
            if "x-message" in self.schema:
                raise ValueError(f"{self.schema['x-message']}, got {self.shown(value)}")
            raise ValueError("is not valid" if self.secret else error.message)
        return self._convert(value)

    @cached_property
    def _validator(self) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(dict(self.schema))

    def _convert(self, value: Any) -> Any:
        item_format = self.schema.get("items", {}).get("x-format")
        if item_format and isinstance(value, list):
            return [_CONVERTERS[item_format](item) for item in value]
        convert = _CONVERTERS.get(self.schema.get("x-format", ""))
        if convert:
            return convert(value)
        # JSON's integer accepts 3.0 and its number accepts 3: Settings holds int and float.
        if self.kinds == ("integer",):
            return int(value)
        if self.kinds == ("number",):
            return float(value)
        return value

    def default_in(self, data_dir: Path) -> str:
        """The default of a setting that lives in the data directory (``x-data-dir-default``)."""
        return str(self.schema["x-data-dir-default"]).format(data_dir=data_dir)


def load_config_schema() -> dict[str, Any]:
    with open(CONFIG_SCHEMA_FILE, encoding="utf-8") as handle:
        return json.load(handle)


def _options(schema: Mapping[str, Any]) -> tuple[Option, ...]:
    return tuple(Option(section, key, prop)
                 for section, table in schema["properties"].items()
                 for key, prop in table["properties"].items())


OPTIONS: tuple[Option, ...] = _options(load_config_schema())
OPTIONS_BY_ATTR = {option.attr: option for option in OPTIONS}


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one server process. Immutable once loaded.

    Each attribute but the last two is a setting of ``schemas/config.json`` (its ``x-attr``),
    which holds its default, variable, constraints and meaning; the attributes are generated from
    it, typed as the value the schema's ``type`` or ``x-format`` is converted to.
    """

    # <generated from schemas/config.json: python -m vachat.config_docs --write>
    host: str
    port: int
    env: str
    trusted_proxies: list[str]
    max_json_body: int
    http_idle_timeout: float
    http_body_timeout: float
    shutdown_grace: float
    gc_full_collection_interval: float
    executor_threads: int
    auto_migrate: bool | None
    data_dir: Path
    database_url: str
    database_pool_size: int
    database_pool_timeout: float
    redis_url: str
    jwt_secret: str
    jwt_refresh_secret: str
    cors_origins: list[str]
    bcrypt_rounds: int
    access_token_ttl: int
    refresh_token_ttl: int
    rate_limit_global: Rate
    rate_limit_auth: Rate
    rate_limit_auth_account: Rate
    rate_limit_export: Rate
    log_level: str
    log_dir: str
    log_retention_days: int
    smtp_url: str
    email_from: str
    public_url: str
    email_verify_url: str
    email_reset_url: str
    ws_max_message_size: int
    ws_ping_interval: float
    ws_ping_timeout: float
    ws_auth_timeout: float
    ws_outbound_limit: int
    ws_rate_limit: Rate
    ws_max_per_ip: int
    ws_max_per_user: int
    plugins_enabled: list[str]
    plugins_strict: bool | None
    plugin_modules: list[str]
    # </generated>
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
    def fail_on_plugin_errors(self) -> bool:
        """Whether a plugin that cannot load (bad configuration, import error) stops start-up,
        rather than being skipped with ``/health`` degraded: ``VACHAT_PLUGINS_STRICT``, by
        default on in production only, where a feature silently missing is worse than no start."""
        return self.plugins_strict if self.plugins_strict is not None else self.is_production

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
    placed_in_data_dir = []
    for option in OPTIONS:
        value, source = option.schema.get("default"), f"the default in {CONFIG_SCHEMA_FILE}"
        if option.key in raw.get(option.section, {}):
            value, source = raw[option.section][option.key], sources[option.attr]
        if option.env in environ:
            value, source = environ[option.env], f"environment variable {option.env}"
        if overrides and option.attr in overrides:
            value, source = overrides[option.attr], "test overrides"
        if value is None:
            if "x-data-dir-default" in option.schema:
                placed_in_data_dir.append(option)
            continue
        try:
            values[option.attr] = option.parse(value)
        except (ValueError, TypeError) as error:
            raise ConfigError(
                f"invalid {option.env} ({option.section}.{option.key}) from {source}: {error}"
            ) from None
    for option in placed_in_data_dir:
        values[option.attr] = option.default_in(values["data_dir"])
    values.setdefault("auto_migrate", None)
    values.setdefault("plugins_strict", None)

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
