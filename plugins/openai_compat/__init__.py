"""openai_compat: the OpenAI chat-completions API over vachat conversations (the built-in
``openai_compat`` plugin): ``GET /v1/models`` and ``POST /v1/chat/completions``, so the
official SDKs, LangChain, editors and evaluation harnesses talk to vachat as they talk to
OpenAI, while every call is a real conversation, stored, limited and broadcast like any other.

Modules: ``wire`` (the OpenAI shapes), ``replies`` (following a reply on this node through the
AI plugin's hooks), ``handlers``. Imports nothing from vachat but ``vachat.plugin_api``.
"""

from __future__ import annotations

from typing import Any

from vachat.plugin_api import App, Route, hookimpl

from .handlers import ROUTES
from .replies import Delta, Done, tell

__version__ = "1.0.0"

REQUIRES = ("chat", "ai")


@hookimpl
def vachat_routes(app: App) -> list[Route]:
    return list(ROUTES)


@hookimpl
def ai_reply_delta(app: App, conversation_id: str, message_id: str, delta: str) -> None:
    tell(app, conversation_id, Delta(message_id, delta))


@hookimpl
def ai_reply_completed(app: App, message: dict[str, Any]) -> None:
    tell(app, message["conversationId"], Done(message))
