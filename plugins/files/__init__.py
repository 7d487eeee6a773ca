"""files: uploads, downloads, avatars and message attachments (the built-in ``files`` plugin).

- ``POST /api/files/upload`` streams a multipart body to storage through a worker thread,
  refusing as the bytes arrive: over ``MAX_FILE_SIZE`` or the user's quota (413), a type the
  content does not show to be on the allow-list (415).
- ``GET /api/files`` (mine, paginated), ``GET|DELETE /api/files/:id``,
  ``GET /api/files/:id/download`` (ranges, ETags, a safe ``Content-Disposition``).
- ``POST /api/users/avatar`` and the public ``GET /api/files/avatars/<token>.png``.
- With the chat plugin: the ``files`` of a message are checked and described, and readers of
  a conversation may download its attachments.
- ``python run.py files reconcile [--dry-run]``.

Modules: ``settings`` (the ``[plugins.files]`` section), ``models``, ``storage`` (the backend
interface and the local disk), ``spool``, ``sniffing``, ``names``, ``upload`` (the streaming receiver),
``images``, ``service`` (published as ``app.service(FILES)``; ``api``: its ``Protocol`` and key
for others), ``s3`` (the S3 storage backend), ``delivery``, ``handlers``, ``avatars``, ``attachments``,
``commands``. Imports nothing from vachat but ``vachat.plugin_api``, and of chat only its promise,
``plugins.chat.api``.
"""

from __future__ import annotations

from typing import Any, Awaitable

from vachat.plugin_api import Actor, App, Route, UserExport, hookimpl

from plugins.chat.api import acts_on

from . import api, attachments, avatars, export as export_part, handlers, hookspecs
from .api import FILES
from .commands import add_commands
from .images import stop_decoding
from .service import ACCESS_ALL, FilesService
from .storage import close_storage, open_storage

__version__ = "1.0.0"


@hookimpl
def vachat_addhooks(pluginmanager: Any) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def vachat_services(app: App) -> dict[str, Any]:
    published: api.FilesService = FilesService(app)  # mypy checks it keeps the Protocol
    return {FILES.name: published}


@hookimpl
def vachat_routes(app: App) -> list[Route]:
    # The public avatar route first: it is more specific than /api/files/:id.
    return avatars.routes(app) + handlers.routes(app)


@hookimpl
def vachat_permissions() -> list[tuple[str, str]]:
    return [(ACCESS_ALL, "Read, download and delete any user's files")]


@hookimpl
def vachat_commands(commands: Any) -> None:
    add_commands(commands)


@hookimpl
async def vachat_startup(app: App) -> None:
    await open_storage(app)  # the upload folders, or the bucket (made if missing)


@hookimpl
async def vachat_shutdown(app: App) -> None:
    stop_decoding(app)
    await close_storage(app)


@hookimpl
async def vachat_user_deleting(app: App, user_id: str) -> None:
    await app.service(FILES).delete_all_of(user_id)


@hookimpl
async def vachat_user_exporting(app: App, user_id: str, export: UserExport) -> None:
    await export_part.add_files(app, user_id, export)


@hookimpl(optionalhook=True)
async def admin_dashboard_figures(app: App) -> dict[str, Any]:
    """The admin dashboard's files part: how many files, how many bytes."""
    return {"files": await app.service(FILES).totals()}




# -- the chat plugin's hooks (optional: files works without chat) -------------------------


@hookimpl(optionalhook=True)
@acts_on(lambda message: bool(message["files"]))
async def chat_message_before_store(app: App, message: dict[str, Any], actor: Actor) -> None:
    await attachments.check_message_files(app, message, actor)


@hookimpl(optionalhook=True)
def chat_messages_decorate(app: App, messages: list[dict[str, Any]]) -> Awaitable[None] | None:
    # Most messages carry no file: answered here, without making and awaiting two coroutines
    # (every message sent and every page listed comes through here).
    if not attachments.has_files(messages):
        return None
    return attachments.decorate_messages(app, messages)


@hookimpl(optionalhook=True)
async def chat_message_deleted(app: App, message: dict[str, Any]) -> None:
    await attachments.release(app, attachments.file_ids_of(message))


@hookimpl(optionalhook=True)
async def chat_conversation_deleted(app: App, files: list[str]) -> None:
    await attachments.release(app, files)
