"""The built-in ``admin`` plugin: dashboard, user and role management, the audit log, and the
``vachat users`` commands (README: Admin).

Routes (``/api/admin/…``), each gated by its own permission:

- ``GET dashboard`` (``admin.dashboard``): users, live sockets, and what other plugins
  contribute through the ``admin_dashboard_figures`` hook declared here;
- ``GET users`` (``users.read``), ``GET|PUT|DELETE users/:id`` (``users.read`` /
  ``users.update`` / ``users.delete``);
- ``GET|POST roles``, ``PUT roles/:id``, ``GET permissions`` (``roles.manage``);
- ``GET audit-logs`` (``audit.read``).

It holds no data of its own: users, roles and the audit log are the core's, reached through
``app.accounts``; other plugins' figures arrive through the hook. It imports only
``vachat.plugin_api`` and never another plugin.
"""

from __future__ import annotations

from typing import Any

from vachat.plugin_api import App, HookRegistrar, Route, hookimpl

from . import hookspecs
from .audit_logs import AuditLogsHandler
from .commands import add_commands
from .dashboard import DashboardHandler
from .roles import PermissionsHandler, RoleHandler, RolesHandler
from .sockets import socket_counter
from .users import UserHandler, UsersHandler

__version__ = "0.1.0"

# The core declares users.read, users.update, users.delete, roles.manage and audit.read.
PERMISSIONS = (("admin.dashboard", "See the administration dashboard's figures"),)


@hookimpl
def vachat_addhooks(pluginmanager: HookRegistrar) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def vachat_permissions() -> list[tuple[str, str]]:
    return list(PERMISSIONS)


@hookimpl
def vachat_routes(app: App) -> list[Route]:
    return [
        (r"/api/admin/dashboard", DashboardHandler),
        (r"/api/admin/users", UsersHandler),
        (r"/api/admin/users/([^/]+)", UserHandler),
        (r"/api/admin/roles", RolesHandler),
        (r"/api/admin/roles/([^/]+)", RoleHandler),
        (r"/api/admin/permissions", PermissionsHandler),
        (r"/api/admin/audit-logs", AuditLogsHandler),
    ]


@hookimpl
def vachat_commands(commands: Any) -> None:
    add_commands(commands)


@hookimpl
def vachat_startup(app: App) -> None:
    socket_counter(app).start()


@hookimpl
async def vachat_shutdown(app: App) -> None:
    await socket_counter(app).stop()
