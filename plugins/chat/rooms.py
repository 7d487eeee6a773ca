"""Which sockets of this node joined which conversations, and taking readers out of a room.

A socket's joined conversations are recorded with whether it may write there (its actor owns
the conversation). When a public conversation is made private, every socket but the owner's
leaves its room, on every node (a control message reaches the others): readers who may no
longer read it stop receiving its events at once, not when they next leave. An account that
still may read it (``conversations.read_all``) joins again.
"""

from __future__ import annotations

import weakref
from typing import Any

from vachat.plugin_api import App

__all__ = ["conversation_room", "socket_conversations", "CONTROL_MADE_PRIVATE", "listen", "made_private"]

# The control message a node sends the others when a conversation was made private.
CONTROL_MADE_PRIVATE = "chat.made-private"


def conversation_room(conversation_id: str) -> str:
    return f"conversation:{conversation_id}"


def socket_conversations(app: App) -> "weakref.WeakKeyDictionary[Any, dict[str, bool]]":
    """socket → {conversation id: may write}, for the conversations it joined."""
    state = app.plugin_state("chat")
    if not hasattr(state, "joined"):
        state.joined = weakref.WeakKeyDictionary()
    joined: weakref.WeakKeyDictionary[Any, dict[str, bool]] = state.joined
    return joined


def listen(app: App) -> None:
    """Act on other nodes' ``made_private`` (at start-up)."""
    app.hub.on_control(CONTROL_MADE_PRIVATE, lambda message: _take_readers_out(app, message["conversationId"]))


async def made_private(app: App, conversation_id: str) -> None:
    """A conversation was made private: its readers leave its room here and on every node."""
    _take_readers_out(app, conversation_id)
    await app.hub.send_control(CONTROL_MADE_PRIVATE, {"conversationId": conversation_id})


def _take_readers_out(app: App, conversation_id: str) -> None:
    room = conversation_room(conversation_id)
    for socket, joined in list(socket_conversations(app).items()):
        if joined.get(conversation_id) is False:  # joined, may not write: not the owner
            app.hub.leave(socket, room)
            del joined[conversation_id]
