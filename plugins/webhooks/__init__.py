"""webhooks: signed HTTP callbacks when something happens in a user's conversations and files
(the built-in ``webhooks`` plugin).

- ``POST|GET /api/webhooks``, ``GET|PATCH|DELETE /api/webhooks/:id``,
  ``GET /api/webhooks/:id/deliveries``, ``POST /api/webhooks/:id/test``: each user manages
  their own.
- Events: ``conversation.created|updated|deleted``, ``message.created|updated|deleted``,
  ``ai.reply.completed``, ``file.uploaded``, heard through chat's, the AI's and the files
  plugin's hooks like any third-party plugin would (each optional: without chat, there are no
  message events). A user's webhooks hear only that user's conversations and files.
- Deliveries follow Standard Webhooks (signature, ids, retry schedule), queued in the database
  and claimed once across nodes (``dispatcher.py``); targets must be public (``targets.py``).
- The admin dashboard gets a ``webhooks: {delivered, failed}`` part.

Modules: ``settings``, ``models``, ``signing``, ``targets``, ``service`` (published as
``"webhooks"``), ``dispatcher``, ``handlers``. Imports nothing from vachat but
``vachat.plugin_api``.
"""

from __future__ import annotations

from typing import Any

from vachat.plugin_api import Actor, App, Route, UserExport, hookimpl

from .dispatcher import Dispatcher
from .handlers import ROUTES
from .service import CONTROL_CHANGED, SERVICE, WebhooksService
from .settings import PLUGIN

__version__ = "1.0.0"


def _service(app: App) -> WebhooksService:
    return app.service(SERVICE)


@hookimpl
def vachat_services(app: App) -> dict[str, Any]:
    return {"webhooks": WebhooksService(app)}


@hookimpl
def vachat_routes(app: App) -> list[Route]:
    return list(ROUTES)


@hookimpl
def vachat_startup(app: App) -> None:
    service = _service(app)
    dispatcher = app.plugin_state(PLUGIN).dispatcher = Dispatcher(app)
    service.on_queued = dispatcher.wake
    app.hub.on_control(CONTROL_CHANGED, lambda message: service.forget(message["ownerId"]))
    dispatcher.start()


@hookimpl
async def vachat_shutdown(app: App) -> None:
    await _service(app).drain()
    dispatcher = getattr(app.plugin_state(PLUGIN), "dispatcher", None)
    if dispatcher is not None:
        await dispatcher.stop()


@hookimpl
async def vachat_user_deleting(app: App, user_id: str) -> None:
    await _service(app).delete_all_of(user_id)


@hookimpl
async def vachat_user_exporting(app: App, user_id: str, export: UserExport) -> None:
    export.add_json("webhooks.json", await _service(app).of_owner(user_id))  # the secrets are not in it


@hookimpl(optionalhook=True)
async def admin_dashboard_figures(app: App) -> dict[str, Any]:
    return {"webhooks": await _service(app).totals()}


# -- what happened: the chat, AI and files plugins' hooks (each optional) -------------------


def _owner(conversation: dict[str, Any] | None) -> str | None:
    return conversation.get("ownerId") if conversation else None


@hookimpl(optionalhook=True)
def chat_conversation_created(app: App, conversation: dict[str, Any]) -> None:
    _service(app).emit(_owner(conversation), "conversation.created", conversation)


@hookimpl(optionalhook=True)
def chat_conversation_updated(app: App, conversation: dict[str, Any]) -> None:
    _service(app).emit(_owner(conversation), "conversation.updated", conversation)


@hookimpl(optionalhook=True)
def chat_conversation_deleted(app: App, conversation: dict[str, Any]) -> None:
    _service(app).emit(_owner(conversation), "conversation.deleted", conversation)


@hookimpl(optionalhook=True)
def chat_message_created(app: App, conversation: dict[str, Any], message: dict[str, Any]) -> None:
    _service(app).emit(_owner(conversation), "message.created", message)


@hookimpl(optionalhook=True)
def chat_message_updated(app: App, conversation: dict[str, Any], message: dict[str, Any]) -> None:
    _service(app).emit(_owner(conversation), "message.updated", message)


@hookimpl(optionalhook=True)
def chat_message_deleted(app: App, conversation: dict[str, Any], message: dict[str, Any]) -> None:
    _service(app).emit(_owner(conversation), "message.deleted", {
        "id": message["id"], "conversationId": message["conversationId"]})


@hookimpl(optionalhook=True)
def ai_reply_completed(app: App, conversation: dict[str, Any], message: dict[str, Any]) -> None:
    _service(app).emit(_owner(conversation), "ai.reply.completed", message)


@hookimpl(optionalhook=True)
def files_uploaded(app: App, file: dict[str, Any], actor: Actor) -> None:
    _service(app).emit(actor.id, "file.uploaded", file)
