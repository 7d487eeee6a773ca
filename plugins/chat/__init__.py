"""vachat's built-in chat plugin: conversations and messages over REST, live over WebSocket.

Loaded through the ``vachat.plugins`` entry point like any third-party plugin, and built on
``vachat.plugin_api`` only. One concern per module:

- ``models``: the tables (and why each index exists); ``migrations/``: their history;
- ``service``: every read and write, used by REST, WebSocket and other plugins alike
  (published as ``app.service("chat")``);
- ``counters``: live messages and conversations per day, kept as they change (the admin
  dashboard's figures);
- ``search``: the full-text index (SQLite FTS5 / PostgreSQL tsvector) and its queries;
- ``handlers``: the REST routes; ``events``: the WebSocket events and typing indicators;
  ``rooms``: which sockets joined which conversations (readers leave a room made private);
- ``hookspecs``: the hooks chat offers to other plugins (``chat_*``).
"""

from __future__ import annotations

from typing import Any, Mapping

from vachat.plugin_api import App, hookimpl

from . import hookspecs, rooms
from .events import EVENTS, Typing, listen
from .handlers import ROUTES
from .service import READ_ALL, ChatService

__version__ = "1.0.0"


@hookimpl
def vachat_addhooks(pluginmanager: Any) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def vachat_services(app: App) -> Mapping[str, Any]:
    return {"chat": ChatService(app)}


@hookimpl
def vachat_routes(app: App) -> list[tuple]:
    return list(ROUTES)


@hookimpl
def vachat_ws_events(app: App) -> list[Any]:
    return list(EVENTS)


@hookimpl
def vachat_permissions() -> list[tuple[str, str]]:
    return [(READ_ALL, "Read any conversation and its messages (not change them)")]


@hookimpl
async def vachat_user_deleting(app: App, user_id: str) -> None:
    await app.service("chat").delete_user_data(user_id)


@hookimpl(optionalhook=True)
async def admin_dashboard_figures(app: App) -> dict[str, Any]:
    """The admin dashboard's ``conversations`` and ``messages`` parts (optional: chat works
    without the admin plugin, and then this is never called)."""
    return await app.service("chat").dashboard_figures()


@hookimpl
def vachat_startup(app: App) -> None:
    rooms.listen(app)
    listen(app)


@hookimpl
def vachat_shutdown(app: App) -> None:
    Typing.of(app).close()
