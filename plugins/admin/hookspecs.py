"""The hooks the admin plugin offers to other plugins (declared through ``vachat_addhooks``).

Implement them with ``@hookimpl(optionalhook=True)`` from ``vachat.plugin_api``: the admin
plugin may be absent, and then the implementation is simply never called.
"""

from __future__ import annotations

from typing import Any

from vachat.plugin_api import App, MaybeAwaitable, hookspec

__all__ = ["admin_dashboard_figures", "DASHBOARD_PARTS"]

#: The parts of the dashboard other plugins contribute; a part nobody answered for is listed
#: in the dashboard's ``missing``.
DASHBOARD_PARTS = ("conversations", "messages", "files", "ai", "webhooks")


@hookspec
def admin_dashboard_figures(app: App) -> MaybeAwaitable[dict[str, Any] | None]:
    """Contribute figures to ``GET /api/admin/dashboard``: a dict holding any of the parts

    - ``conversations``: ``{"total": int, …}``
    - ``messages``: ``{"total": int, "perDay": [{"date": "YYYY-MM-DD", "count": int}, …]}`` for the
      last 7 days (UTC), oldest first
    - ``files``: ``{"count": int, "bytes": int}``
    - ``ai``: ``{"tokensToday": int}``
    - ``webhooks``: ``{"delivered": int, "failed": int}`` (deliveries)

    or an awaitable of it (None: nothing to add). Keep it cheap: it runs on every dashboard view, so answer from
    indexed aggregates or counters, not scans. A plugin that raises is logged and its parts
    are reported in ``missing``; the dashboard still answers.
    """
