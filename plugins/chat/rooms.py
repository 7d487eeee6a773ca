"""Which sockets of this node joined which conversations, and taking readers out of a room.

A socket's joined conversations are recorded with whether it may write there (its actor owns
the conversation). When a public conversation is made private, every socket but the owner's
leaves its room, on every node (a control message reaches the others): readers who may no
longer read it stop receiving its events at once, not when they next leave. An account that
still may read it (``conversations.read_all``) joins again.

When a conversation is deleted (by its owner, or with the owner's account), every socket
joined to it leaves its room, on every node. The owner's sockets hear ``conversation-deleted``
in the owner's room; the others (readers of a public conversation, ``conversations.read_all``
holders) are told on their own socket, so each socket gets it once, and none is left holding
a join slot for a conversation that is gone.

The same happens when a socket's permissions change (its user's role, or the role's
permissions: ``vachat_socket_actors_changed``, which the core runs on every node holding such
a socket): it leaves the rooms of the conversations it joined but may no longer read (another's
private conversation, once ``conversations.read_all`` is gone).
"""

from __future__ import annotations

import weakref
from typing import Any

from vachat.plugin_api import App

from .api import CHAT

__all__ = ["conversation_room", "socket_conversations", "CONTROL_DELETED", "CONTROL_MADE_PRIVATE", "deleted", "listen",
           "made_private", "recheck"]

# The control messages a node sends the others when a conversation was made private, and
# when conversations were deleted.
CONTROL_MADE_PRIVATE = "chat.made-private"
CONTROL_DELETED = "chat.deleted"


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
    """Act on other nodes' ``made_private`` and ``deleted`` (at start-up)."""
    app.hub.on_control(CONTROL_MADE_PRIVATE, lambda message: _take_out(app, [message["conversationId"]],
                                                                       owners_stay=True))
    app.hub.on_control(CONTROL_DELETED, lambda message: _take_out(app, message["conversationIds"], tell_readers=True))


async def made_private(app: App, conversation_id: str) -> None:
    """A conversation was made private: its readers leave its room here and on every node."""
    _take_out(app, [conversation_id], owners_stay=True)
    await app.hub.send_control(CONTROL_MADE_PRIVATE, {"conversationId": conversation_id})


async def deleted(app: App, conversation_ids: list[str]) -> None:
    """Conversations were deleted: their rooms empty here and on every node, and the readers
    joined to them are told (see the module docstring)."""
    if not conversation_ids:
        return
    _take_out(app, conversation_ids, tell_readers=True)
    await app.hub.send_control(CONTROL_DELETED, {"conversationIds": conversation_ids})


def _take_out(app: App, conversation_ids: list[str], *, owners_stay: bool = False, tell_readers: bool = False) -> None:
    """This node's sockets joined to these conversations leave their rooms: all of them, or,
    with ``owners_stay``, the readers only (those that may not write there); with
    ``tell_readers`` each reader taken out hears ``conversation-deleted`` (the owner's sockets
    hear it in the owner's room)."""
    wanted = set(conversation_ids)
    for socket, joined in list(socket_conversations(app).items()):
        for conversation_id in wanted.intersection(joined):
            may_write = joined[conversation_id]
            if may_write and owners_stay:
                continue
            del joined[conversation_id]
            app.hub.leave(socket, conversation_room(conversation_id))
            if tell_readers and not may_write:
                app.hub.send(socket, "conversation-deleted", {"conversationId": conversation_id})


async def recheck(app: App, sockets: list[Any]) -> None:
    """These sockets' permissions changed: each leaves the rooms it may no longer read."""
    joined_by = socket_conversations(app)
    # Their own conversations (may write) stay readable whatever the role says.
    others = [(socket, [cid for cid, may_write in joined.items() if not may_write])
              for socket in sockets if socket.actor is not None and (joined := joined_by.get(socket))]
    others = [(socket, ids) for socket, ids in others if ids]
    if not others:
        return
    answers = await app.service(CHAT).readable_among([(socket.actor, ids) for socket, ids in others])
    for (socket, conversation_ids), readable in zip(others, answers):
        joined = joined_by.get(socket, {})
        for conversation_id in conversation_ids:
            # Still joined (a leave may have run during the query) and no longer readable.
            if conversation_id not in readable and joined.pop(conversation_id, None) is not None:
                app.hub.leave(socket, conversation_room(conversation_id))
