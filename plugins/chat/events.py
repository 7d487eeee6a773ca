"""The chat plugin's WebSocket events (docs/websocket.md).

``join-conversation`` answers with what the client missed, then the socket goes live with no
gap and no repeat. The order of operations is what guarantees it:

1. check access (404 for a conversation the caller may not read);
2. join ``conversation:<id>`` *holding* its frames (``hub.join(hold=True)``) and wait for the
   broker subscription, so from here on every publication from every node is kept;
3. read the missed messages and ``seq``, the conversation's latest change seq, read first:
   the answer covers every change numbered up to it and none after (``ChatService.replay``);
   then the generation in progress;
4. answer, and right after the answer release the held frames with ``seq``: the hub drops
   every change numbered up to it, held or arriving later, and delivers the rest in order
   (``vachat.hub``: sequenced rooms, registered at start-up by ``listen``). ``ai-delta``
   frames carry no seq: those up to ``generation.index`` are dropped by a filter that ends
   with the first later delta of that reply (or its ``ai-done``).

``send-message`` is ``POST /api/chat/message`` over the socket (same schema, same service):
the ack comes after the commit and carries the stored message. Typing indicators expire:
every node tells its own sockets ``user-stopped-typing`` after ``[plugins.chat]
typing_timeout`` seconds unless a ``typing-stop`` or another start came (``Typing``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from vachat.plugin_api import Actor, App, EventContext, Forbidden, NotFound, Reply, ValidationFailed, ws_event

from .rooms import socket_conversations
from .service import SERVICE, ChatService, conversation_room

__all__ = ["EVENTS", "Typing", "listen"]

ROOM_PREFIX = conversation_room("")


def _chat(ctx: EventContext) -> ChatService:
    return ctx.app.service(SERVICE)


def listen(app: App) -> None:
    """Make conversation rooms sequenced (a node reads back the changes it missed) and follow
    their typing indicators (``Typing``)."""
    chat = app.service(SERVICE)

    async def read_after(room: str, seq: int) -> tuple[list[tuple[int, str, Any]], int]:
        return await chat.changes_after(room[len(ROOM_PREFIX):], seq)

    app.hub.sequence_rooms(ROOM_PREFIX, read_after)
    Typing.of(app).watch()


def _deltas_told(generation: dict[str, Any] | None) -> Any:
    """The ``drop`` for ``hub.release``: the ``ai-delta`` frames the answer's ``generation``
    already carries (its text up to ``index``); spent at the first later frame of that reply."""
    if not generation:
        return None
    message_id, told = generation.get("messageId"), generation.get("index", -1)

    def drop(kind: str, data: Any) -> bool | None:
        if not isinstance(data, dict) or data.get("messageId") != message_id:
            return False
        if kind == "ai-delta" and data.get("index", -1) <= told:
            return True
        return None if kind in ("ai-delta", "ai-done") else False

    return drop


@ws_event("join-conversation", schema="chat/join",
          summary="Join a conversation's room; replays what was missed since `since` or `sinceSeq`")
async def join_conversation(ctx: EventContext, data: dict[str, Any]) -> Any:
    chat = _chat(ctx)
    conversation_id, since, since_seq = data["conversationId"], data.get("since"), data.get("sinceSeq")
    if since is not None and since_seq is not None:
        raise ValidationFailed("Give since or sinceSeq, not both",
                               details=[{"field": "sinceSeq", "message": "cannot be combined with since"}])
    room = conversation_room(conversation_id)
    joined = socket_conversations(ctx.app).setdefault(ctx.socket, {})
    limit = ctx.app.plugin_config("chat")["max_joined_conversations"]
    if conversation_id not in joined and len(joined) >= limit:
        raise ValidationFailed(f"A socket may join at most {limit} conversations; leave one first")
    conversation = await chat.check_access(ctx.actor, conversation_id)
    # Recorded before the awaits below: a conversation made private meanwhile takes this
    # socket out like any other reader (``rooms``), and the join then fails. (Made private
    # before the replay's read, the replay's own access check refuses it.)
    joined[conversation_id] = conversation["ownerId"] == ctx.actor.id
    try:
        await ctx.join(room, hold=True)
        answer = await chat.replay(ctx.actor, conversation_id, since, since_seq)
        answer["generation"] = await ctx.app.hooks.chat_generation_status(conversation_id=conversation_id)
        if conversation_id not in joined:
            raise NotFound("Conversation not found")
    except BaseException:
        ctx.leave(room)
        joined.pop(conversation_id, None)
        raise
    if since is None and since_seq is None:
        answer.pop("deleted", None)
    drop, seq = _deltas_told(answer["generation"]), answer["seq"]
    ctx.after_reply(lambda: ctx.hub.release(ctx.socket, room, drop, seq=seq))
    # a join sent without an id is answered by an event carrying the same data.
    return answer if ctx.frame_id is not None else Reply("joined-conversation", answer)


@ws_event("leave-conversation", schema="chat/conversation-ref", summary="Leave a conversation's room")
async def leave_conversation(ctx: EventContext, data: dict[str, Any]) -> dict[str, Any]:
    conversation_id = data["conversationId"]
    ctx.leave(conversation_room(conversation_id))
    joined = socket_conversations(ctx.app).get(ctx.socket)
    if joined is not None:
        joined.pop(conversation_id, None)
    await Typing.of(ctx.app).stop(conversation_id, ctx.actor.id)
    return {"conversationId": conversation_id}


@ws_event("send-message", schema="chat/message-create", summary="Send a message (as POST /api/chat/message); acked once stored")
async def send_message(ctx: EventContext, data: dict[str, Any]) -> dict[str, Any]:
    message, _created = await _chat(ctx).send_message(ctx.actor, data)
    return message


def _writable_joined(ctx: EventContext, conversation_id: str) -> None:
    joined = socket_conversations(ctx.app).get(ctx.socket) or {}
    if conversation_id not in joined:
        raise Forbidden("Join the conversation first")
    if not joined[conversation_id]:
        raise Forbidden("Only the owner can write in this conversation")


@ws_event("typing-start", schema="chat/conversation-ref", summary="Tell the room I am typing (expires on its own)")
async def typing_start(ctx: EventContext, data: dict[str, Any]) -> dict[str, Any]:
    conversation_id = data["conversationId"]
    _writable_joined(ctx, conversation_id)
    await Typing.of(ctx.app).start(conversation_id, ctx.actor, ctx.socket)
    return {"conversationId": conversation_id, "typing": True}


@ws_event("typing-stop", schema="chat/conversation-ref", summary="Tell the room I stopped typing")
async def typing_stop(ctx: EventContext, data: dict[str, Any]) -> dict[str, Any]:
    conversation_id = data["conversationId"]
    _writable_joined(ctx, conversation_id)
    await Typing.of(ctx.app).stop(conversation_id, ctx.actor.id)
    return {"conversationId": conversation_id, "typing": False}


class Typing:
    """Who is typing where, as this node's sockets were told, and the timers that end it.

    Every node with members in a conversation follows its ``user-typing`` and
    ``user-stopped-typing`` publications, from whichever node (``hub.watch``), and ends a
    typing indicator for its own sockets once ``typing_timeout`` passes without another
    start: a stop still arrives when the typist's node dies or the broker is down."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.timeout = float(app.plugin_config("chat")["typing_timeout"])
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}  # (room, user id) → expiry

    @classmethod
    def of(cls, app: App) -> "Typing":
        state = app.plugin_state("chat")
        if getattr(state, "typing", None) is None:
            state.typing = cls(app)
        typing: Typing = state.typing
        return typing

    def watch(self) -> None:
        self.app.hub.watch(ROOM_PREFIX, "user-typing", self._started)
        self.app.hub.watch(ROOM_PREFIX, "user-stopped-typing", self._ended)

    async def start(self, conversation_id: str, actor: Actor, socket: Any) -> None:
        await self.app.hub.publish(conversation_room(conversation_id), "user-typing",
                                   {"conversationId": conversation_id, "userId": actor.id, "userName": actor.name},
                                   exclude=socket)

    async def stop(self, conversation_id: str, user_id: str) -> None:
        if (conversation_room(conversation_id), user_id) not in self._timers:
            return  # not typing: nothing to tell
        await self.app.hub.publish(conversation_room(conversation_id), "user-stopped-typing",
                                   {"conversationId": conversation_id, "userId": user_id})

    def _started(self, room: str, data: Any) -> None:
        key = (room, data["userId"])
        self._cancel(key)  # a cancelled timer never fires: only the latest start's can
        self._timers[key] = asyncio.get_running_loop().call_later(self.timeout, self._expire, key)

    def _ended(self, room: str, data: Any) -> None:
        self._cancel((room, data["userId"]))

    def _cancel(self, key: tuple[str, str]) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, key: tuple[str, str]) -> None:
        room, user_id = key
        self._timers.pop(key, None)
        self.app.hub.publish_local(room, "user-stopped-typing",
                                   {"conversationId": room[len(ROOM_PREFIX):], "userId": user_id})

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


EVENTS = [join_conversation, leave_conversation, send_message, typing_start, typing_stop]
