"""vachat's built-in chat plugin: conversations and messages over REST, live over WebSocket.

Loaded through the ``vachat.plugins`` entry point like any third-party plugin, and built on
``vachat.plugin_api`` only. One concern per module:

- ``models``: the tables (and why each index exists); ``migrations/``: their history;
- ``service``: every read and write, used by REST, WebSocket and other plugins alike
  (published as ``app.service(CHAT)``); ``store``: the queries and writes it runs on database
  threads (access rules, row locks, message inserts); ``batcher``: the group commit of sends;
  ``wire``: the wire shapes (a message built in one place, ``message_shape``); ``listing``:
  the conversation list's hand-written SQL; ``export``: a user's conversations for an export;
- ``counters``: live messages and conversations per day, kept as they change (the admin
  dashboard's figures);
- ``search``: the full-text index (SQLite FTS5 / PostgreSQL tsvector) and its queries;
- ``handlers``: the REST routes; ``events``: the WebSocket events and typing indicators;
  ``rooms``: which sockets joined which conversations (readers leave a room made private);
- ``hookspecs``: the hooks chat offers to other plugins (``chat_*``); ``api``: the service's
  ``Protocol`` and key other plugins import (``app.service(CHAT)``).
"""

from __future__ import annotations

from typing import Any, Mapping

from vachat.plugin_api import App, HookRegistrar, Route, UserExport, hookimpl, server_event

from . import api, export as export_part, hookspecs, rooms
from .api import CHAT
from .events import EVENTS, Typing, listen
from .handlers import ROUTES
from .service import READ_ALL, ChatService

__version__ = "1.0.0"


@hookimpl
def vachat_addhooks(pluginmanager: HookRegistrar) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def vachat_services(app: App) -> Mapping[str, Any]:
    published: api.ChatService = ChatService(app)  # mypy checks it keeps the Protocol
    return {CHAT.name: published}


@hookimpl
def vachat_routes(app: App) -> list[Route]:
    return list(ROUTES)


@hookimpl
def vachat_ws_events(app: App) -> list[Any]:
    return list(EVENTS)


@hookimpl
def vachat_server_events(app: App) -> list[Any]:
    conversation, owner = "conversation:<id> (sockets that joined it)", "user:<owner> (the owner's sockets)"
    return [
        server_event("new-message", "A message was stored", schema="chat/message", audience=conversation),
        server_event("message-updated", "A message was edited", schema="chat/message", audience=conversation),
        server_event("message-deleted", "A message was deleted", schema="chat/events/message-deleted",
                     audience=conversation),
        server_event("user-typing", "Someone is typing (not sent to the typist's own socket)",
                     schema="chat/events/user-typing", audience=conversation),
        server_event("user-stopped-typing", "Someone stopped typing, or their typing expired",
                     schema="chat/events/user-stopped-typing", audience=conversation),
        server_event("conversation-created", "A conversation was created", schema="chat/conversation", audience=owner),
        server_event("conversation-updated", "A conversation changed", schema="chat/conversation", audience=owner),
        server_event("conversation-deleted", "A conversation was deleted (its readers leave its room)",
                     schema="chat/events/conversation-deleted",
                     audience=f"{owner}, and each other socket that joined it, once"),
    ]


@hookimpl
def vachat_permissions() -> list[tuple[str, str]]:
    return [(READ_ALL, "Read any conversation and its messages (not change them)")]


@hookimpl
async def vachat_user_deleting(app: App, user_id: str) -> None:
    await app.service(CHAT).delete_user_data(user_id)


@hookimpl
def vachat_user_exporting(app: App, user_id: str, export: UserExport) -> None:
    export_part.add_conversations(app, user_id, export)


@hookimpl(optionalhook=True)
async def admin_dashboard_figures(app: App) -> dict[str, Any]:
    """The admin dashboard's ``conversations`` and ``messages`` parts (optional: chat works
    without the admin plugin, and then this is never called)."""
    return await app.service(CHAT).dashboard_figures()


@hookimpl
async def vachat_socket_actors_changed(app: App, sockets: list[Any]) -> None:
    await rooms.recheck(app, sockets)


@hookimpl
def vachat_startup(app: App) -> None:
    rooms.listen(app)
    listen(app)


@hookimpl
def vachat_shutdown(app: App) -> None:
    Typing.of(app).close()
