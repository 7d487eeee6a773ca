"""vachat's built-in AI plugin: the assistant's replies, streamed live, stoppable and resumable
on any node (README: AI; docs/websocket.md).

Loaded through the ``vachat.plugins`` entry point like any third-party plugin, built on
``vachat.plugin_api`` only, and meeting the chat plugin through its hooks and its ``chat``
service, typed by ``plugins.chat.api`` (``REQUIRES``). One concern per module:

- ``providers``: the provider interface and the ``vachat.ai_providers`` entry-point group;
  ``providers.echo`` and ``providers.openai``, the shipped ones;
- ``assistant``: the assistant of one application (quota and one-reply checks, context,
  stopping, shutdown); ``prompts``: the system messages and the cap on a conversation's own; ``generation``: one reply, from the context to the stored message;
- ``progress``: who generates where, and the reply's progress for joins on any node;
  ``recovery``: finishing the reply of a node that died (``interrupted``);
- ``usage`` and ``models``: tokens per user and day, quotas; ``metrics``: Prometheus;
- ``handlers``: ``GET /api/ai/usage``, ``POST /api/chat/messages/:id/regenerate``;
  ``events``: ``stop-generation``; ``hookspecs``: ``ai_before_request``, offered to others;
  ``api``: the service's ``Protocol`` and key others import (``app.service(AI)``).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from vachat.plugin_api import Actor, App, HookRegistrar, Route, hookimpl, server_event

from plugins.chat.api import acts_on

from . import api, hookspecs
from .api import AI
from .assistant import STOP_CONTROL, Assistant
from .events import EVENTS
from .handlers import ROUTES
from .metrics import AiMetrics
from .prompts import check_conversation_prompt
from .options import reply_options

__version__ = "1.0.0"

log = logging.getLogger("vachat.plugins.ai")

REQUIRES = ("chat",)


@hookimpl
def vachat_addhooks(pluginmanager: HookRegistrar) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def vachat_services(app: App) -> Mapping[str, Any]:
    # Built here, with the declarations: a provider that cannot be loaded (an unknown
    # AI_PROVIDER, openai without AI_BASE_URL) stops the plugin loading, with the reason.
    assistant = Assistant(app, app.plugin_config("ai"))
    app.plugin_state("ai").assistant = assistant
    published: api.AiService = assistant  # mypy checks it keeps the Protocol
    return {AI.name: published}


@hookimpl
def vachat_routes(app: App) -> list[Route]:
    return list(ROUTES)


@hookimpl
def vachat_ws_events(app: App) -> list[Any]:
    return list(EVENTS)


@hookimpl
def vachat_server_events(app: App) -> list[Any]:
    room = "conversation:<id> (sockets that joined it)"
    return [
        server_event("ai-typing", "The assistant started or stopped answering", schema="ai/events/ai-typing",
                     audience=room),
        server_event("ai-delta", "A piece of the reply being generated", schema="ai/events/ai-delta", audience=room),
        server_event("ai-done", "The reply ended (the stored reply follows as new-message)",
                     schema="ai/events/ai-done", audience=room),
    ]


@hookimpl
def vachat_metrics(registry: Any, app: App) -> None:
    Assistant.of(app).metrics = AiMetrics(registry)


@hookimpl
def vachat_startup(app: App) -> None:
    assistant = Assistant.of(app)
    app.hub.on_control(STOP_CONTROL, assistant.on_stop_control)
    if app.config.is_production and assistant.provider.name == "echo":
        log.warning("AI_PROVIDER is echo, which repeats the user's words: set AI_PROVIDER (and "
                    "AI_BASE_URL, AI_API_KEY, AI_MODEL) to a real model in production")
    assistant.sweeper.start()


@hookimpl
async def vachat_shutdown(app: App) -> None:
    await Assistant.of(app).shutdown()


@hookimpl
async def vachat_user_deleting(app: App, user_id: str) -> None:
    await Assistant.of(app).forget_user(user_id)


# ---------------------------------------------------------------------------
# chat's hooks
# ---------------------------------------------------------------------------


@hookimpl
@acts_on(lambda message: bool(message["requiresAIResponse"]))
async def chat_message_before_store(app: App, conversation: dict[str, Any], message: dict[str, Any], actor: Actor) -> None:
    if message.get("requiresAIResponse"):
        reply_options(message.get("metadata"))  # malformed options: 400 before anything is taken
        await Assistant.of(app).refuse_or_reserve(conversation, actor, leaf_id=message.get("parentId"),
                                                  new_content=message.get("content") or "", draft_id=message["draftId"])


@hookimpl
def chat_conversation_before_store(app: App, changes: dict[str, Any]) -> None:
    check_conversation_prompt(changes.get("metadata"), int(app.plugin_config("ai")["user_system_prompt_max"]))


@hookimpl
async def chat_message_refused(app: App, conversation: dict[str, Any], message: dict[str, Any]) -> None:
    if message.get("requiresAIResponse"):
        await Assistant.of(app).release_reservation(conversation["id"], message["draftId"])


@hookimpl
async def chat_ai_reply_requested(app: App, conversation: dict[str, Any], message: dict[str, Any], actor: Actor) -> None:
    await Assistant.of(app).start(conversation, parent_id=message["id"], user_id=actor.id,
                                  options=reply_options(message.get("metadata")))


@hookimpl
async def chat_generation_status(app: App, conversation_id: str) -> dict[str, Any] | None:
    return await Assistant.of(app).status(conversation_id)


# ---------------------------------------------------------------------------
# the admin plugin's dashboard, when it is there
# ---------------------------------------------------------------------------


@hookimpl(optionalhook=True)
async def admin_dashboard_figures(app: App) -> dict[str, Any]:
    return {"ai": {"tokensToday": await Assistant.of(app).usage.tokens_today()}}
