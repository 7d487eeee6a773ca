"""The command line: ``python run.py <command>`` or the installed ``vachat`` script.

Commands: ``serve`` (the default), ``migrate`` (apply / rollback / create / status),
``plugins``, ``openapi``, ``hooks`` (the hooks reference), ``config``, ``chat`` (the terminal client in ``vachat.client.command``, a client of
the public protocol that reads no server configuration), and every command a plugin adds
through ``vachat_commands`` (the core's accounts add ``seed`` and ``create-admin``). Configuration comes from the same files and
environment as the server's; a bad value exits with status 2 and a message naming it.

This module never reaches into a plugin: plugins' commands arrive through the hook.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from typing import Any

from . import __version__
from .config import ConfigError, Settings, load_settings

__all__ = ["main", "build_parser"]

def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    return load_settings(overrides=overrides)


def _configure_logging(settings: Settings, quiet: bool = False) -> None:
    from .logs import configure_logging

    # Commands other than serve print their results on stdout: their log goes to stderr.
    configure_logging("WARNING" if quiet else settings.log_level, settings.resolve_path(settings.log_dir)
                      if settings.log_dir else None, settings.log_retention_days,
                      stream=sys.stderr if quiet else sys.stdout)


def _application(settings: Settings):
    from .app import VachatApplication

    app = VachatApplication(settings)
    app.db.bind()
    return app


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import PendingMigrations, serve

    settings = _settings(args)
    _configure_logging(settings)
    try:
        serve(settings)
    except PendingMigrations as error:
        print(f"vachat: refusing to start: {error}", file=sys.stderr)
        return 1
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from .migrate import installed_package_holding

    settings = _settings(args)
    _configure_logging(settings, quiet=True)
    migrations = _application(settings).migrations()
    if args.owner and args.owner not in migrations.sources:
        print(f"vachat migrate: no migrations for {args.owner!r}; known: {', '.join(migrations.sources)}",
              file=sys.stderr)
        return 2
    if args.action == "apply":
        applied = migrations.apply(args.owner)
        print(json.dumps({"applied": applied}, indent=2) if applied else "nothing to apply")
    elif args.action == "rollback":
        if not args.owner:
            print("vachat migrate rollback: name the owner with --owner (core or a plugin)", file=sys.stderr)
            return 2
        rolled = migrations.rollback(args.owner, args.steps)
        print(f"rolled back: {', '.join(rolled)}" if rolled else "nothing to roll back")
    elif args.action == "create":
        if not args.name:
            print("vachat migrate create: give the migration a name", file=sys.stderr)
            return 2
        owner = args.owner or "core"
        installed = installed_package_holding(migrations.sources[owner].directory)
        if installed:
            print(f"vachat migrate create: refusing to write {owner}'s migration into an installed package "
                  f"({installed}): it would be lost at the next install and never reach the source. Run this "
                  f"command in {owner}'s source checkout, installed editable (pip install -e <checkout>), "
                  "and release the new migration with the package.", file=sys.stderr)
            return 1
        print(migrations.create(owner, args.name))
    else:
        print(json.dumps(migrations.status(args.owner), indent=2))
    return 0


def _plugin_command(handler: Any, args: argparse.Namespace) -> int:
    """Run a command a plugin added: its handler gets the built application and the args."""
    settings = _settings(args)
    _configure_logging(settings, quiet=True)
    return handler(_application(settings), args)


def _wrap_plugin_handlers(parser: argparse.ArgumentParser) -> None:
    """Give every ``handler`` default in a plugin's parser (and its sub-commands) the app."""
    handler = parser.get_default("handler")
    if handler is not None:
        parser.set_defaults(handler=functools.partial(_plugin_command, handler))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _wrap_plugin_handlers(child)


def cmd_plugins(args: argparse.Namespace) -> int:
    from .app import VachatApplication

    settings = _settings(args)
    _configure_logging(settings, quiet=True)
    app = VachatApplication(settings)
    plugins = app.plugins.describe()
    if args.json:
        print(json.dumps(plugins, indent=2))
        return 0
    print(f"{'name':<16} {'version':<10} {'enabled':<8} source")
    for plugin in plugins:
        state = "yes" if plugin["enabled"] else "no"
        print(f"{plugin['name']:<16} {plugin['version']:<10} {state:<8} {plugin['source']}"
              + (f"  ({plugin['error']})" if plugin["error"] else ""))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .client.command import run

    return run(args)


def cmd_openapi(args: argparse.Namespace) -> int:
    """Print the OpenAPI 3.1 document of every route of the enabled plugins (what
    ``/api/openapi.json`` serves), so the REST API can be read or fed to tools offline."""
    from .openapi import build_openapi

    settings = _settings(args)
    _configure_logging(settings, quiet=True)
    print(json.dumps(build_openapi(_application(settings)), indent=2, default=str))
    return 0


def cmd_hooks(args: argparse.Namespace) -> int:
    """Print the hooks reference (Markdown) of the core and the enabled plugins, or with
    ``--builtin`` of the core and the built-in plugins only (docs/hooks.md)."""
    from .hooks_document import builtin_manager, render

    if args.builtin:
        print(render(builtin_manager()), end="")
        return 0
    settings = _settings(args)
    _configure_logging(settings, quiet=True)
    print(render(_application(settings).plugins), end="")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """The core's settings, then every enabled plugin's section under ``plugins`` (defaults and
    environment applied, as the plugin sees it); secrets masked in both. With
    ``--defaults-toml`` / ``--markdown-table``: what the settings' schemas generate."""
    if args.defaults_toml or args.markdown_table:
        from .config import load_config_schema
        from .config_docs import builtin_plugin_schemas, defaults_toml, markdown_table

        render = defaults_toml if args.defaults_toml else markdown_table
        print(render(load_config_schema(), builtin_plugin_schemas()), end="")
        return 0
    from .app import VachatApplication
    from .plugin_config import public_plugin_config

    settings = _settings(args)
    _configure_logging(settings, quiet=True)
    app = VachatApplication(settings)
    summary = settings.public_summary()
    summary["plugins"] = {
        plugin.name: public_plugin_config(app.plugin_config(plugin.name), app.schemas, f"{plugin.name}/config")
        for plugin in sorted(app.plugins.enabled, key=lambda p: p.name) if plugin.source != "core"}
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _add_plugin_commands(commands: argparse._SubParsersAction) -> None:
    """Commands from the plugins' ``vachat_commands`` hooks. A configuration that cannot be
    read leaves them out here; running any command then reports the configuration error."""
    from .plugin_manager import PluginManager

    try:
        settings = load_settings()
    except ConfigError:
        return
    manager = PluginManager(enabled=settings.plugins_enabled, strict=settings.plugins_strict)
    quiet = logging.getLogger("vachat.plugins")
    level, quiet.level = quiet.level, logging.CRITICAL  # load errors are reported by `plugins`
    try:
        manager.load()
    finally:
        quiet.setLevel(level)
    before = set(commands.choices)
    manager.collect("vachat_commands", commands=commands)
    for name in set(commands.choices) - before:
        _wrap_plugin_handlers(commands.choices[name])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vachat", description="vachat: virtual-assistant chat server",
        epilog="Configuration: conf/default.toml, the file named by VACHAT_CONFIG, then environment "
               "variables (see README).")
    parser.add_argument("--version", action="version", version=f"vachat {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command")

    serve = commands.add_parser("serve", help="run the server (the default command)")
    serve.add_argument("--host", help="address to bind (HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (PORT)")
    serve.set_defaults(handler=cmd_serve)

    migrate = commands.add_parser("migrate", help="apply, roll back, create or list migrations")
    migrate.add_argument("action", nargs="?", default="apply", choices=("apply", "rollback", "create", "status"))
    migrate.add_argument("name", nargs="?", help="name of the migration to create")
    migrate.add_argument("--owner", help="core or a plugin name (default: all for apply, core for create)")
    migrate.add_argument("--steps", type=int, default=1, help="how many to roll back (default 1)")
    migrate.set_defaults(handler=cmd_migrate)

    plugins = commands.add_parser("plugins", help="list discovered plugins and whether they are enabled")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(handler=cmd_plugins)

    openapi = commands.add_parser("openapi", help="print the OpenAPI document of the REST API")
    openapi.set_defaults(handler=cmd_openapi)

    hooks = commands.add_parser("hooks", help="print the reference of every hook (Markdown)")
    hooks.add_argument("--builtin", action="store_true",
                       help="the core's and the built-in plugins' only, whatever is installed (docs/hooks.md)")
    hooks.set_defaults(handler=cmd_hooks)

    config = commands.add_parser("config", help="print the effective configuration, every plugin's section "
                                                "included (secrets masked)")
    generated = config.add_mutually_exclusive_group()
    generated.add_argument("--defaults-toml", action="store_true",
                           help="print conf/default.toml as the settings' schemas declare it")
    generated.add_argument("--markdown-table", action="store_true",
                           help="print the README's table of settings, from the same schemas")
    config.set_defaults(handler=cmd_config)

    from .client.command import add_arguments as add_chat_arguments

    chat = commands.add_parser("chat", help="a terminal client of a running server (interactive, or -m TEXT once)")
    add_chat_arguments(chat)
    chat.set_defaults(handler=cmd_chat)
    _add_plugin_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = getattr(args, "handler", cmd_serve)
    try:
        return handler(args) or 0
    except ConfigError as error:
        print(f"vachat: configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
