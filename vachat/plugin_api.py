"""The public API for plugin authors: everything a plugin needs, from one import.

Built-in plugins (``plugins/``) and third-party ones use only what is exported here (and
``vachat.testing`` in their tests); a test fails if one imports anything else from ``vachat``.
If a plugin needs more, the API is missing something and it belongs here, documented.

What a plugin is handed:

- ``App`` (``vachat.interfaces``): in every hook as ``app`` and in handlers as ``self.app``:
  ``config``, ``db.run``, ``run_blocking``, ``hub``/``publish``, ``limiter``, ``mailer``,
  ``plugin_config(name)``, ``plugin_state(name)``, ``hooks.<name>(…)`` / ``.notify(…)``, ``service(key)``,
  ``accounts`` (users, sessions, audit), ``with_redis``; ``hub.on_control`` / ``hub.send_control``
  for node-to-node messages that are not about a room.
- Declarations: ``hookimpl`` / ``hookspec``, ``ApiHandler`` + ``endpoint``,
  ``server_event`` to declare the frames a plugin sends (the AsyncAPI document lists them),
  ``AssetHandler`` for a page's own files (a fixed list, with the page's CSP),
  ``StreamingBodyHandler`` for uploads (the body streamed to ``receive_chunk`` under its own
  ``max_body_size``, raised above ``MAX_JSON_BODY`` only once the caller is authorised), ``ws_event`` with ``EventContext`` and ``Reply``,
  ``requires`` and ``Permission`` (with default grants) for permissions, ``BaseModel`` for models, ``parse_size`` for a size setting
  written as the core's are (``10MiB`` or a number of bytes), ``check_json_size`` for a
  client's free-form JSON object (``JSON_BLOB_MAX_BYTES``, 16 KiB encoded, as preferences),
  ``lock_rows`` for a read-then-write that concurrent requests must not interleave (a quota),
  ``stop_task`` to stop a background task at shutdown (cancelled again until it ends, bounded:
  a task can swallow one cancellation, and ``task.cancel(); await task`` then never returns).
- ``UserExport``: what the ``vachat_user_exporting`` hook is handed, to add a plugin's part
  of a user's data export (``add_json``, ``add_stream``).
- Types for what plugins share: ``ServiceKey`` (a published service's name, typed with the
  ``Protocol`` its owner exports: ``app.service(CHAT)`` is a ``ChatService``), ``Route``,
  ``HookRegistrar`` (``vachat_addhooks``' argument), ``MaybeAwaitable`` (what a hook may return).
- The typed errors (``NotFound``, ``Conflict`` …), each rendered as the error envelope.
- ``StartupRefused(message)``, raised from ``vachat_startup`` when the node cannot work (a
  missing bucket): start-up stops and ``vachat serve`` exits with status 2 and the message.

A module may also set ``REQUIRES = ("chat",)`` (plugins it cannot work without),
``SCHEMAS_DIR`` / ``MIGRATIONS_DIR`` (when not ``schemas/`` and ``migrations/`` beside it).

    from vachat.plugin_api import hookimpl, ApiHandler, endpoint, ws_event, BaseModel
"""

import pluggy

from .config import Rate, StartupRefused, parse_size
from .db import BaseModel, JSONField, database, lock_rows, now
from .errors import (
    ApiError, Conflict, Forbidden, InternalError, NotFound, PayloadTooLarge, QuotaExceeded,
    RateLimited, TokenExpired, Unauthorized, Unavailable, UnsupportedMediaType, ValidationFailed,
)
from .events import server_event, ws_event
from .exports import UserExport
from .ids import new_id
from .interfaces import (Accounts, App, Database, HookRegistrar, Hooks, Hub, Limiter, Mailer, MaybeAwaitable, Route,
                         ServiceKey)
from .rbac import Permission, requires
from .tasks import stop_task
from .actor import Actor
from .web import ApiHandler, AssetHandler, StreamingBodyHandler, endpoint
from .wire import JSON_BLOB_MAX_BYTES, check_json_size, json_dumps
from .ws import EventContext, Reply

#: Marks a function in a plugin module as the implementation of the hook of the same name
#: (``vachat.hookspecs`` for the core's hooks; other plugins declare theirs). Use
#: ``@hookimpl(optionalhook=True)`` for a hook whose owner plugin may be absent.
hookimpl = pluggy.HookimplMarker("vachat")

#: Marks a hook specification in a module or class that a plugin hands to
#: ``pluginmanager.add_hookspecs`` from its ``vachat_addhooks`` hook. Name hooks
#: ``<plugin>_<event>``; ``@hookspec(firstresult=True)`` when the first answer wins.
hookspec = pluggy.HookspecMarker("vachat")

__all__ = [
    # declaring
    "hookimpl", "hookspec", "ApiHandler", "StreamingBodyHandler", "AssetHandler", "endpoint", "ws_event", "server_event", "requires", "Permission", "EventContext", "Reply",
    "BaseModel", "JSONField", "database", "lock_rows", "now", "new_id", "Rate", "parse_size", "json_dumps",
    "check_json_size", "JSON_BLOB_MAX_BYTES", "stop_task",
    # what a plugin is handed
    "App", "Actor", "Accounts", "Database", "Hooks", "Hub", "Limiter", "Mailer", "UserExport", "ServiceKey", "HookRegistrar",
    "Route", "MaybeAwaitable",
    # errors
    "ApiError", "ValidationFailed", "Unauthorized", "TokenExpired", "Forbidden", "NotFound",
    "Conflict", "PayloadTooLarge", "UnsupportedMediaType", "RateLimited", "QuotaExceeded",
    "InternalError", "Unavailable",
    # stopping start-up (``vachat_startup``): the node exits with status 2 and the message
    "StartupRefused",
]
