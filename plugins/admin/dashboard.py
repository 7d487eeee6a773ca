"""``GET /api/admin/dashboard``: the figures an operator glances at.

Users come from the core's accounts (``app.accounts.user_figures``, indexed aggregates), live
sockets from ``sockets``; conversations, messages, files and AI usage belong to other plugins
and arrive through the ``admin_dashboard_figures`` hook this plugin declares. A part nobody
contributed (the plugin is absent, failed, or took longer than ``FIGURES_TIMEOUT_SECONDS``) is
left out and named in ``missing``.

This module must never answer 500 because another plugin failed, and never import one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from vachat.plugin_api import ApiError, ApiHandler, App, endpoint

from .hookspecs import DASHBOARD_PARTS
from .sockets import socket_counter

__all__ = ["DashboardHandler", "dashboard_figures", "contributed_parts"]

log = logging.getLogger("vachat.plugins.admin.dashboard")

# The plugins' figures together may take this long (s); beyond it their parts are "missing"
# rather than keeping the page waiting.
FIGURES_TIMEOUT_SECONDS = 10.0


def contributed_parts(answers: list[Any]) -> dict[str, Any]:
    """Merge the hook's answers: known parts only; two plugins naming the same part merge."""
    parts: dict[str, Any] = {}
    for answer in answers:
        if not isinstance(answer, dict):
            log.warning("ignoring an admin_dashboard_figures answer that is not a dict")
            continue
        for name in DASHBOARD_PARTS:
            value = answer.get(name)
            if isinstance(value, dict):
                parts[name] = {**parts.get(name, {}), **value}
    return parts


async def _plugin_figures(app: App) -> dict[str, Any]:
    try:
        answers = await asyncio.wait_for(app.hooks.admin_dashboard_figures(), FIGURES_TIMEOUT_SECONDS)
    except (ApiError, asyncio.TimeoutError):
        # The hook call already isolates other failures; a refusal or a hang costs the parts only.
        log.warning("admin_dashboard_figures did not answer; its parts are missing", exc_info=True)
        return {}
    return contributed_parts(answers)


async def dashboard_figures(app: App) -> dict[str, Any]:
    users, parts, live = await asyncio.gather(
        app.accounts.user_figures(), _plugin_figures(app), socket_counter(app).live())
    return {"users": users, **parts, "sockets": {"live": live},
            "missing": [name for name in DASHBOARD_PARTS if name not in parts]}


class DashboardHandler(ApiHandler):
    @endpoint("Dashboard figures: users, conversations, messages per day, files, AI, live sockets",
              response="admin/dashboard", permission="admin.dashboard", tags=("admin",))
    async def get(self) -> None:
        self.respond(await dashboard_figures(self.app))
