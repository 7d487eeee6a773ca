"""A plugin's configuration: its ``[plugins.<name>]`` table, its environment variables, its defaults.

A plugin describes its settings in ``schemas/config.json``. Each property may name the
environment variable that sets it with ``"x-env": "AI_PROVIDER"``; the variable wins over the
TOML table, as the core's own variables win over its files. Values from the environment are
text and are converted by the property's ``type`` (integer, number, boolean, array as a comma
list); ``default``s fill what nobody set. The result is validated against the schema once, at
start-up, and a plugin whose configuration does not hold refuses to load with the reason.

This module must never let a bad value through to a plugin, and never echo a value that the
schema marks ``"writeOnly": true`` (API keys) in an error.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from .errors import ValidationFailed

__all__ = ["PluginConfigError", "resolve_plugin_config", "public_plugin_config", "ENV_KEYWORD"]

#: The schema keyword that names a property's environment variable.
ENV_KEYWORD = "x-env"
#: A key no schema property describes (nothing says whether it is secret): masked if named so.
SECRET_KEY_NAME = re.compile(r"secret|password|passwd|token|api_?key|private", re.I)
MASK = "***"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class PluginConfigError(ValueError):
    """A plugin's configuration does not match its schema; the message names the setting."""


def resolve_plugin_config(name: str, section: Mapping[str, Any], environ: Mapping[str, str],
                          schemas: Any, schema_id: str) -> Mapping[str, Any]:
    """``section`` with the environment and the schema's defaults applied, validated.

    Without a config schema the section is passed through as it is.
    """
    values = dict(section)
    if schemas is None:
        return values
    properties = schemas.object_properties(schema_id)
    for key, prop in properties.items():
        variable = prop.get(ENV_KEYWORD)
        if variable and variable in environ:
            try:
                values[key] = _from_text(environ[variable], prop)
            except ValueError as error:
                raise PluginConfigError(f"invalid {variable} ([plugins.{name}] {key}): {error}") from None
        if key not in values and "default" in prop:
            values[key] = prop["default"]
    try:
        schemas.validate(schema_id, values)
    except ValidationFailed as error:
        problems = "; ".join(f"{detail.get('field', '?')}: {detail.get('message', '')}"
                             for detail in (error.details or []))
        raise PluginConfigError(f"invalid [plugins.{name}] configuration: {problems or error}") from None
    return values


def public_plugin_config(values: Mapping[str, Any], schemas: Any, schema_id: str) -> dict[str, Any]:
    """A resolved section safe to print: what the schema marks ``writeOnly`` (and a key the
    schema does not describe, named like a secret) masked, passwords in URLs masked."""
    from .config import redact_url

    properties = schemas.object_properties(schema_id) if schema_id in schemas else {}
    shown: dict[str, Any] = {}
    for key, value in sorted(values.items()):
        secret = properties[key].get("writeOnly") if key in properties else SECRET_KEY_NAME.search(key)
        if secret and value not in (None, ""):
            shown[key] = MASK
        elif isinstance(value, str) and "://" in value:
            shown[key] = redact_url(value)
        else:
            shown[key] = value
    return shown


def _from_text(text: str, prop: Mapping[str, Any]) -> Any:
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "integer":
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {_shown(text, prop)}") from None
    if kind == "number":
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {_shown(text, prop)}") from None
    if kind == "boolean":
        lowered = text.strip().lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise ValueError(f"expected true or false, got {_shown(text, prop)}")
    if kind == "array":
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def _shown(text: str, prop: Mapping[str, Any]) -> str:
    return "a hidden value" if prop.get("writeOnly") else repr(text)
