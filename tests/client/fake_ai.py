"""A stand-in assistant for the client's tests that need to decide how far a reply has gone
(the real AI plugin, tested in test_assistant.py, keeps its own pace): it answers
through chat's hooks and service with exactly the frames of SPEC §5.1
(``ai-typing`` true, ``ai-delta`` 0, 1, 2 …, ``ai-done``, the stored reply as ``new-message``,
``ai-typing`` false), reports the reply in progress for a join's ``generation``, and honours
``stop-generation``.

The reply is ``Echo: `` and the question, a word per delta, ``FAKE_AI_DELAY`` seconds apart
(0.02 by default; a question containing ``[slow]`` waits 0.4 s per word, long enough for a
person or a test to stop it). One reply at a time per conversation (409 otherwise). A test in
the same process may set ``pace`` to a queue: each delta then waits for an item from it, so the
test decides exactly how far a reply has gone.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

from vachat.plugin_api import ApiHandler, Conflict, endpoint, hookimpl, new_id, ws_event

__version__ = "1.0"
REQUIRES = ("chat",)

SLOW_DELAY = 0.4

pace: "asyncio.Queue[None] | None" = None

_running: dict[str, dict[str, Any]] = {}  # conversation id → {messageId, text, index, stop, task}


def _words(question: str) -> list[str]:
    pieces = re.findall(r"\S+\s*", f"Echo: {question}")
    return pieces or ["Echo:"]


async def _reply(app: Any, conversation_id: str, question: dict[str, Any]) -> None:
    chat = app.service("chat")
    state = _running[conversation_id]
    room = f"conversation:{conversation_id}"
    delay = SLOW_DELAY if "[slow]" in question["content"] else float(os.environ.get("FAKE_AI_DELAY", "0.02"))
    finish = "stop"
    try:
        await app.publish(room, "ai-typing", {"conversationId": conversation_id, "typing": True})
        for index, word in enumerate(_words(question["content"])):
            if pace is not None:
                await pace.get()
            else:
                await asyncio.sleep(delay)
            if state["stop"]:
                finish = "cancelled"
                break
            # Progress first, then the frame: a join reads a state covering every delta sent.
            state["text"] += word
            state["index"] = index
            await app.publish(room, "ai-delta", {"conversationId": conversation_id, "messageId": state["messageId"],
                                                 "index": index, "delta": word})
        await app.publish(room, "ai-done", {"conversationId": conversation_id, "messageId": state["messageId"],
                                            "finishReason": finish})
        # The slot is free before the reply is stored: a client that saw it stored may ask again
        # at once (freed after the store, that question could meet a Conflict).
        _running.pop(conversation_id, None)
        await chat.store_assistant_message(conversation_id, state["text"], parent_id=question["id"],
                                           message_id=state["messageId"],
                                           metadata={"model": "fake", "finishReason": finish})
    finally:
        _running.pop(conversation_id, None)
        await app.publish(room, "ai-typing", {"conversationId": conversation_id, "typing": False})


@hookimpl
def chat_message_before_store(app, conversation, message, actor):
    if message.get("requiresAIResponse") and conversation["id"] in _running:
        raise Conflict("A reply is already being generated in this conversation")


@hookimpl
async def chat_ai_reply_requested(app, conversation, message, actor):
    conversation_id = conversation["id"]
    if conversation_id in _running:
        return
    state = _running[conversation_id] = {"messageId": new_id(), "text": "", "index": -1, "stop": False}
    state["task"] = asyncio.ensure_future(_reply(app, conversation_id, message))


@hookimpl
def chat_generation_status(app, conversation_id):
    state = _running.get(conversation_id)
    if state is None:
        return None
    return {"messageId": state["messageId"], "text": state["text"], "index": state["index"]}


@ws_event("stop-generation", summary="Stop the fake assistant's reply")
async def stop_generation(ctx, data):
    conversation_id = data.get("conversationId") if isinstance(data, dict) else None
    await ctx.app.service("chat").check_access(ctx.actor, conversation_id, write=True)
    state = _running.get(conversation_id)
    if state is not None:
        state["stop"] = True
    return {"conversationId": conversation_id, "stopped": state is not None}


class UsageHandler(ApiHandler):
    """``GET /api/ai/usage`` as the AI plugin answers it (how clients learn there is one)."""

    @endpoint("The fake assistant's usage report")
    async def get(self):
        self.respond({"date": "1970-01-01", "tier": "free", "used": 0, "limit": None})


@hookimpl
def vachat_routes(app):
    return [(r"/api/ai/usage", UsageHandler)]


@hookimpl
def vachat_ws_events(app):
    return [stop_generation]


@hookimpl
async def vachat_shutdown(app):
    for state in list(_running.values()):
        state["stop"] = True
        task = state.get("task")
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
