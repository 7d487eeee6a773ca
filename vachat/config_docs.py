"""What is written about the settings, generated from their schemas: ``conf/default.toml`` and
the README's configuration table.

The core's ``schemas/config.json`` and each built-in plugin's ``schemas/config.json`` are the only
places a setting is declared; this module turns them into the shipped TOML file (every default,
with its variable and meaning as comments) and the Markdown table between the README's
``<!-- config-table:start -->`` and ``<!-- config-table:end -->`` markers. A test fails when the
files drift from the schemas; ``python -m vachat.config_docs --write`` brings them back in step.

Like ``config``, this module imports nothing of vachat but ``config`` and ``resources``.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any, Iterable, Mapping

from .config import CONFIG_SCHEMA_FILE, DEFAULT_CONFIG_FILE, load_config_schema
from .resources import PACKAGE_DIR

__all__ = ["defaults_toml", "markdown_table", "builtin_plugin_schemas", "replace_between_markers",
           "TABLE_START", "TABLE_END"]

TABLE_START, TABLE_END = "<!-- config-table:start -->", "<!-- config-table:end -->"
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
            yield f"| `{prop['x-env']}` | {_cell(_shown_default(prop))} | {_cell(where.format(key=key))}{_cell(meaning)} |"


def markdown_table(core: Mapping[str, Any], plugins: Mapping[str, Mapping[str, Any]]) -> str:
    """The README's table: every core variable, then every built-in plugin's."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for section, table in core["properties"].items():
        lines += _rows(table, "")
    for name, schema in plugins.items():
        lines += _rows(schema, f"{name} plugin (`[plugins.{name}] {{key}}`): ")
    return "\n".join(lines) + "\n"


def replace_between_markers(text: str, generated: str) -> str:
    """``text`` with what lies between the table markers replaced by ``generated``."""
    before, found, rest = text.partition(TABLE_START)
    _, found_end, after = rest.partition(TABLE_END)
    if not (found and found_end):
        raise ValueError(f"the markers {TABLE_START} and {TABLE_END} are missing")
    return f"{before}{TABLE_START}\n{generated}{TABLE_END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vachat.config_docs", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true",
                        help=f"rewrite {DEFAULT_CONFIG_FILE.name} and the README table in the checkout")
    args = parser.parse_args(argv)
    core, plugins = load_config_schema(), builtin_plugin_schemas()
    if not args.write:
        print(defaults_toml(core, plugins), end="")
        return 0
    DEFAULT_CONFIG_FILE.write_text(defaults_toml(core, plugins), encoding="utf-8")
    README.write_text(replace_between_markers(README.read_text(encoding="utf-8"), markdown_table(core, plugins)),
                      encoding="utf-8")
    print(f"wrote {DEFAULT_CONFIG_FILE} and the table in {README} from {CONFIG_SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
