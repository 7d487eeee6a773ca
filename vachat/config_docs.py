"""What is derived from the settings' schemas: the typed attributes of ``Settings``,
``conf/default.toml`` and the README's configuration table.

The core's ``schemas/config.json`` and each built-in plugin's ``schemas/config.json`` are the only
places a setting is declared. This module turns them into the ``Settings`` attribute lines
between the generated markers of ``vachat/config.py`` (typed as the value each ``type`` or
``x-format`` is converted to), the shipped TOML file (every default, with its variable and
meaning as comments) and the Markdown table between the README's ``<!-- config-table:start -->``
and ``<!-- config-table:end -->`` markers. A test fails when any of them drifts from the
schemas; ``python -m vachat.config_docs --write`` brings them back in step. Adding a core
setting is one edit: its property in ``schemas/config.json``, then ``--write``.

Like ``config``, this module imports nothing of vachat but ``config`` and ``resources``.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any, Iterable, Mapping

from .config import CONFIG_SCHEMA_FILE, DEFAULT_CONFIG_FILE, load_config_schema
from .resources import PACKAGE_DIR

__all__ = ["defaults_toml", "markdown_table", "settings_fields", "builtin_plugin_schemas",
           "replace_between_markers", "TABLE_START", "TABLE_END", "FIELDS_START", "FIELDS_END"]

TABLE_START, TABLE_END = "<!-- config-table:start -->", "<!-- config-table:end -->"
FIELDS_START = "    # <generated from schemas/config.json: python -m vachat.config_docs --write>"
FIELDS_END = "    # </generated>"
CONFIG_MODULE = PACKAGE_DIR / "config.py"
# The Python type of a setting's value, by its x-format, else by its JSON type (the first one
# when it lists several): what vachat.config's converters make of it.
PYTHON_TYPES = {"size": "int", "rate": "Rate", "directory": "Path", "base-url": "str", "integer": "int",
                "number": "float", "boolean": "bool", "array": "list[str]", "string": "str"}
# The built-in plugins sit beside the vachat package, in a checkout and in an installed wheel.
BUILTIN_PLUGINS_DIR = PACKAGE_DIR.parent / "plugins"
README = PACKAGE_DIR.parent / "README.md"
# Comments are wrapped to keep the TOML file readable in an 100-column editor.
COMMENT_WIDTH = 96

TOML_HEADER = """\
# vachat defaults. Everything here serves out of the box on one machine:
# SQLite, in-process broker and rate limits, console e-mail, the echo AI provider.
#
# GENERATED from schemas/config.json (python -m vachat.config_docs --write): edit the schema.
#
# Override with a file named by VACHAT_CONFIG (same shape as this one), then with
# environment variables (named after each key below), which win over both files.
# A key that is not listed here stops start-up (a misspelt setting would otherwise be ignored).
# Relative paths are taken from the working directory the server starts in.
"""

TOML_PLUGINS_NOTE = """\
# A plugin's own settings live in a [plugins.<name>] table, checked against the plugin's
# schemas/config.json, where each setting also names its environment variable. The built-in
# plugins' settings and their defaults:
"""


def builtin_plugin_schemas() -> dict[str, dict[str, Any]]:
    """The config schema of every built-in plugin that has one, by plugin name."""
    return {path.parent.parent.name: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(BUILTIN_PLUGINS_DIR.glob("*/schemas/config.json"))}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def _comment(text: str, prefix: str = "# ") -> list[str]:
    return textwrap.wrap(text, COMMENT_WIDTH - len(prefix), initial_indent=prefix, subsequent_indent=prefix)


def _toml_setting(key: str, prop: Mapping[str, Any], commented: bool = False) -> list[str]:
    lead = "# " if commented else ""
    lines = _comment(prop.get("description", ""), prefix=lead + "# ")
    if "default" in prop:
        lines.append(f"{lead}{key} = {_toml_value(prop['default'])}  # {prop['x-env']}")
    else:
        lines.append(f"# {key} = …  # {prop['x-env']}; unset: {prop.get('x-default-text', 'none')}")
    return lines


def defaults_toml(core: Mapping[str, Any], plugins: Mapping[str, Mapping[str, Any]]) -> str:
    """``conf/default.toml``: every core default in its section, the plugins' commented out."""
    lines = [TOML_HEADER.rstrip("\n")]
    for section, table in core["properties"].items():
        lines += ["", f"[{section}]", *_comment(table.get("description", ""))]
        for key, prop in table["properties"].items():
            lines += _toml_setting(key, prop)
    lines += ["", TOML_PLUGINS_NOTE.rstrip("\n")]
    for name, schema in plugins.items():
        lines += ["#", f"# [plugins.{name}]"]
        for key, prop in schema.get("properties", {}).items():
            if "x-env" in prop:
                lines += _toml_setting(key, prop, commented=True)
    return "\n".join(lines) + "\n"


def _shown_default(prop: Mapping[str, Any]) -> str:
    if "x-default-text" in prop:
        return str(prop["x-default-text"])
    default = prop.get("default")
    if default in ("", [], None):
        return "empty"
    if isinstance(default, bool):
        return f"`{'true' if default else 'false'}`"
    return f"`{default}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(table: Mapping[str, Any], where: str) -> Iterable[str]:
    for key, prop in table.get("properties", {}).items():
        if "x-env" in prop:
            meaning = prop.get("description", "").rstrip(".")
            if where and meaning[:2].istitle():  # "Largest file…" reads on as "…: largest file…"
                meaning = meaning[0].lower() + meaning[1:]
            yield f"| `{prop['x-env']}` | {_cell(_shown_default(prop))} | {_cell(where.format(key=key))}{_cell(meaning)} |"


def markdown_table(core: Mapping[str, Any], plugins: Mapping[str, Mapping[str, Any]]) -> str:
    """The README's table: every core variable, then every built-in plugin's."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for section, table in core["properties"].items():
        lines += _rows(table, "")
    for name, schema in plugins.items():
        lines += _rows(schema, f"{name} plugin (`[plugins.{name}] {{key}}`): ")
    return "\n".join(lines) + "\n"


def settings_fields(core: Mapping[str, Any]) -> str:
    """The ``Settings`` attribute lines, one per core setting, in the schema's order. A setting
    with neither a default nor a place in the data directory may be unset: ``| None``."""
    lines = []
    for table in core["properties"].values():
        for prop in table["properties"].values():
            kind = prop.get("x-format") if prop.get("x-format") in PYTHON_TYPES else prop["type"]
            python_type = PYTHON_TYPES[kind[0] if isinstance(kind, list) else kind]
            if "default" not in prop and "x-data-dir-default" not in prop:
                python_type += " | None"
            lines.append(f"    {prop['x-attr']}: {python_type}")
    return "\n".join(lines) + "\n"


def between_markers(text: str, start: str = TABLE_START, end: str = TABLE_END) -> str:
    """What lies between the lines ``start`` and ``end`` of ``text``."""
    _, found, rest = text.partition(start + "\n")
    inside, found_end, _ = rest.partition(end)
    if not (found and found_end):
        raise ValueError(f"the markers {start.strip()} and {end.strip()} are missing")
    return inside


def replace_between_markers(text: str, generated: str, start: str = TABLE_START, end: str = TABLE_END) -> str:
    """``text`` with what lies between the lines ``start`` and ``end`` replaced by ``generated``."""
    before, found, rest = text.partition(start + "\n")
    _, found_end, after = rest.partition(end)
    if not (found and found_end):
        raise ValueError(f"the markers {start.strip()} and {end.strip()} are missing")
    return f"{before}{start}\n{generated}{end}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vachat.config_docs", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true",
                        help=f"rewrite Settings' attributes, {DEFAULT_CONFIG_FILE.name} and the README table in the checkout")
    args = parser.parse_args(argv)
    core, plugins = load_config_schema(), builtin_plugin_schemas()
    if not args.write:
        print(defaults_toml(core, plugins), end="")
        return 0
    if not README.exists():
        parser.error(f"--write rewrites a checkout's files, and {PACKAGE_DIR} is an installed package")
    CONFIG_MODULE.write_text(replace_between_markers(CONFIG_MODULE.read_text(encoding="utf-8"), settings_fields(core),
                                                     FIELDS_START, FIELDS_END), encoding="utf-8")
    DEFAULT_CONFIG_FILE.write_text(defaults_toml(core, plugins), encoding="utf-8")
    README.write_text(replace_between_markers(README.read_text(encoding="utf-8"), markdown_table(core, plugins)),
                      encoding="utf-8")
    print(f"wrote Settings in {CONFIG_MODULE}, {DEFAULT_CONFIG_FILE} and the table in {README} "
          f"from {CONFIG_SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
