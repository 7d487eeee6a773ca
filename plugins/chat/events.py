"""The chat plugin's WebSocket events (docs/websocket.md).

``join-conversation`` answers with what the client missed, then the socket goes live with no
gap and no repeat. The order of operations is what guarantees it:

1. check access (404 for a conversation the caller may not read);
2. join ``conversation:<id>`` *holding* its frames (``hub.join(hold=True)``) and wait for the
   broker subscription, so from here on every publication from every node is kept;
3. read the missed messages (committed before this read) and the generation in progress;
4. answer, and right after the answer release the held frames, dropping those the answer
   already carries (a ``new-message`` in ``missed``, an older ``message-updated``, a
   ``message-deleted`` in ``deleted``, the ``ai-delta`` frames up to ``generation.index``),
   and keep dropping those for ``REPLAY_FILTER_SECONDS`` more.

A message committed after step 3 is published after it, so it is held (or arrives after the
answer). One committed before step 3 is in ``missed``; its publication may come before the
join (never seen live), while held (dropped at the release) or just after the answer
(dropped by the lingering filter).

``send-message`` is ``POST /api/chat/message`` over the socket (same schema, same service):
the ack comes after the commit and carries the stored message. Typing indicators expire:
the node where ``typing-start`` arrived sends ``user-stopped-typing`` after
``[plugins.chat] typing_timeout`` seconds unless a ``typing-stop`` or another start came.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any, Callable

from vachat.plugin_api import (
    Actor, App, EventContext, Forbidden, NotFound, Reply, ValidationFailed, json_dumps, ws_event,
)

from .rooms import socket_conversations
from .service import SERVICE, ChatService, conversation_room

__all__ = ["EVENTS", "Typing", "REPLAY_FILTER_SECONDS"]

# After a join's answer, live frames of messages it already carried are still dropped for
# this long: a message committed before the replay was read may be published (by this or
# another node, through Redis) only after the answer went out. Commit-to-publish takes
# milliseconds; seconds leave room for a loaded node.
REPLAY_FILTER_SECONDS = 10.0


def _chat(ctx: EventContext) -> ChatService:
    return ctx.app.service(SERVICE)


@functools.lru_cache(maxsize=16)
def _frame_of(payload: bytes) -> tuple[Any, dict[str, Any]]:
    """``(type, data)`` of a held or live frame's JSON. The hub hands the same ``bytes`` object
    to the filter of every socket of the room, so a publication is parsed once, not once per
    recipient (the bytes' hash is computed once and kept by the object). Read only."""
    frame = json.loads(payload)
    return frame.get("type"), frame.get("data") or {}


def _drop_replayed(answer: dict[str, Any]) -> Callable[[bytes], bool] | None:
    """The ``drop`` for ``hub.release``: held frames the join's answer already carries; None
    when it carries nothing a frame could repeat (a join without ``since`` while no reply is
    being generated), so the hub neither filters the held frames nor lingers."""
    if not answer["missed"] and not answer.get("deleted") and not answer.get("generation"):
        return None
    # updatedAt as the held frames carry it (the encoder the hub used)
    missed_stamps = {m["id"]: json.loads(json_dumps(m["updatedAt"])) for m in answer["missed"]}
    deleted = set(answer.get("deleted") or ())
    generation = answer.get("generation") or {}

    def drop(payload: bytes) -> bool:
        kind, data = _frame_of(payload)
        if kind == "new-message":
            return data.get("id") in missed_stamps
        if kind == "message-updated":
            stamp = missed_stamps.get(data.get("id"))
            return stamp is not None and data.get("updatedAt", "") <= stamp
        if kind == "message-deleted":
            return data.get("messageId") in deleted
        if kind == "ai-delta" and generation:
            return data.get("messageId") == generation.get("messageId") and data.get("index", -1) <= generation.get("index", -1)
        return False

    return drop


@ws_event("join-conversation", schema="chat/join", summary="Join a conversation's room; replays what was missed since `since`")
async def join_conversation(ctx: EventContext, data: dict[str, Any]) -> Any:
    chat = _chat(ctx)
    conversation_id, since = data["conversationId"], data.get("since")
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
        answer = await chat.replay(ctx.actor, conversation_id, since)
        answer["generation"] = await ctx.app.hooks.chat_generation_status(conversation_id=conversation_id)
        if conversation_id not in joined:
            raise NotFound("Conversation not found")
    except BaseException:
        ctx.leave(room)
        joined.pop(conversation_id, None)
        raise
    if since is None:
        answer.pop("deleted", None)
    drop = _drop_replayed(answer)
    ctx.after_reply(lambda: ctx.hub.release(ctx.socket, room, drop, linger=REPLAY_FILTER_SECONDS))
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
    """Who is typing where, on this node, and the timers that end it."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.timeout = float(app.plugin_config("chat")["typing_timeout"])
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def of(cls, app: App) -> "Typing":
        state = app.plugin_state("chat")
        if getattr(state, "typing", None) is None:
            state.typing = cls(app)
        typing: Typing = state.typing
        return typing

    async def start(self, conversation_id: str, actor: Actor, socket: Any) -> None:
        key = (conversation_id, actor.id)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()  # a cancelled timer never fires: only the latest start's can
        self._timers[key] = asyncio.get_running_loop().call_later(self.timeout, self._expire, key)
        await self.app.hub.publish(conversation_room(conversation_id), "user-typing",
                                   {"conversationId": conversation_id, "userId": actor.id, "userName": actor.name},
                                   exclude=socket)

    async def stop(self, conversation_id: str, user_id: str) -> None:
        timer = self._timers.pop((conversation_id, user_id), None)
        if timer is None:
            return  # not typing: nothing to tell
        timer.cancel()
        await self._stopped(conversation_id, user_id)

    def _expire(self, key: tuple[str, str]) -> None:
        self._timers.pop(key, None)
        task = asyncio.get_running_loop().create_task(self._stopped(*key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stopped(self, conversation_id: str, user_id: str) -> None:
        await self.app.hub.publish(conversation_room(conversation_id), "user-stopped-typing",
                                   {"conversationId": conversation_id, "userId": user_id})

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


EVENTS = [join_conversation, leave_conversation, send_message, typing_start, typing_stop]
