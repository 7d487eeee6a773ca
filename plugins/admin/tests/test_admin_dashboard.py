"""The dashboard: the core's user figures, live sockets, and other plugins' parts through
``admin_dashboard_figures`` (absent or failing ones named in ``missing``, never a 500)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from vachat.plugin_api import hookimpl
from vachat.testing import assert_error, eventually


class ChatFigures:
    """Stands in for a chat plugin: conversations and messages."""

    __version__ = "1.0"

    @staticmethod
    @hookimpl(optionalhook=True)
    async def admin_dashboard_figures(app: Any) -> dict[str, Any]:
        today = datetime.date(2030, 1, 7)
        days = [today - datetime.timedelta(days=back) for back in range(6, -1, -1)]
        return {"conversations": {"total": 3},
                "messages": {"total": 12, "perDay": [{"date": str(day), "count": 2 if day == today else 0}
                                                     for day in days]},
                "unrelated": {"ignored": True}}


class BrokenFiles:
    """Stands in for a files plugin whose figures fail."""

    __version__ = "1.0"

    @staticmethod
    @hookimpl(optionalhook=True)
    def admin_dashboard_figures(app: Any) -> dict[str, Any]:
        raise RuntimeError("the files table is on fire")


@pytest.mark.gen_test
async def test_dashboard_counts_users_and_live_sockets_and_names_what_is_missing(app, fetch, ws_connect, make_user,
                                                                                admin_user):
    ada = await make_user()
    await make_user(is_active=False, created_at=datetime.datetime(2020, 1, 1))
    socket = await ws_connect(user=ada)
    await socket.receive("ready")
    response = await fetch("/api/admin/dashboard", user=admin_user)
    assert response.code == 200, response.body
    figures = response.data
    # admin and ada signed in (make_user opens a session); the 2020 account is not new.
    assert figures["users"] == {"total": 3, "active24h": 3, "new7d": 2}
    assert figures["sockets"] == {"live": 1}
    assert figures["missing"] == ["conversations", "messages", "files", "ai", "webhooks"]
    assert not {"conversations", "messages", "files", "ai"} & set(figures)
    socket.close()
    # The server notices the close a moment later.
    await eventually(lambda: app.hub.connection_count == 0, 5, "the server to see the socket close")
    assert (await fetch("/api/admin/dashboard", user=admin_user)).data["sockets"] == {"live": 0}


@pytest.mark.vachat(plugins=["admin", ("chatfigures", ChatFigures), ("brokenfiles", BrokenFiles)])
@pytest.mark.gen_test
async def test_contributed_parts_appear_and_a_failing_plugin_only_loses_its_own(fetch, admin_user):
    response = await fetch("/api/admin/dashboard", user=admin_user)
    assert response.code == 200, response.body
    figures = response.data
    assert figures["conversations"] == {"total": 3}
    assert figures["messages"]["total"] == 12 and len(figures["messages"]["perDay"]) == 7
    assert figures["messages"]["perDay"][-1] == {"date": "2030-01-07", "count": 2}
    assert figures["missing"] == ["files", "ai", "webhooks"]
    assert "unrelated" not in figures


@pytest.mark.gen_test
async def test_dashboard_needs_admin_dashboard(fetch, make_user):
    reader = await make_user(role="reader", permissions=["users.read", "audit.read"])
    assert_error(await fetch("/api/admin/dashboard", user=reader), 403, "FORBIDDEN")
    assert_error(await fetch("/api/admin/dashboard"), 401, "UNAUTHORIZED")
