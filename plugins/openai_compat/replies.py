"""Following an assistant reply on this node, for a ``/v1`` request waiting on it.

A ``/v1/chat/completions`` request stores its user message and the AI plugin starts the reply
on this same node (chat asks for it right after the message is stored). The AI plugin's
``ai_reply_delta`` and ``ai_reply_completed`` hooks then feed the ``ReplyWatch`` the request
opened *before* it stored the message, so not a piece of the reply can be missed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from vachat.plugin_api import App

__all__ = ["ReplyWatch", "Delta", "Done", "open_watch", "close_watch", "watches_of"]

PLUGIN = "openai_compat"


@dataclass(frozen=True)
class Delta:
    message_id: str
    text: str


@dataclass(frozen=True)
class Done:
    """The stored reply (chat's wire shape): ``content``, ``type`` (``error`` when it
    failed) and ``metadata`` with ``finishReason`` and the token counts."""
    message: dict[str, Any]


@dataclass
class ReplyWatch:
    conversation_id: str
    events: "asyncio.Queue[Delta | Done]" = field(default_factory=asyncio.Queue)


def watches_of(app: App) -> dict[str, list[ReplyWatch]]:
    state = app.plugin_state(PLUGIN)
    if not hasattr(state, "watches"):
        state.watches = {}
    watches: dict[str, list[ReplyWatch]] = state.watches
    return watches


def open_watch(app: App, conversation_id: str) -> ReplyWatch:
    watch = ReplyWatch(conversation_id)
    watches_of(app).setdefault(conversation_id, []).append(watch)
    return watch


def close_watch(app: App, watch: ReplyWatch) -> None:
    watches = watches_of(app)
    listeners = watches.get(watch.conversation_id, [])
    if watch in listeners:
        listeners.remove(watch)
    if not listeners:
        watches.pop(watch.conversation_id, None)


def tell(app: App, conversation_id: str, event: Delta | Done) -> None:
    for watch in watches_of(app).get(conversation_id, ()):
        watch.events.put_nowait(event)
