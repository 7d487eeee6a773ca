"""The public API for plugin authors: everything a plugin needs, from one import.

Built-in plugins (``plugins/``) and third-party ones use only what is exported here (and
``vachat.testing`` in their tests); a test fails if one imports anything else from ``vachat``.
If a plugin needs more, the API is missing something and it belongs here, documented.

What a plugin is handed:

- ``App`` (``vachat.interfaces``): in every hook as ``app`` and in handlers as ``self.app``:
  ``config``, ``db.run``, ``run_blocking``, ``hub``/``publish``, ``limiter``, ``mailer``,
  ``plugin_config(name)``, ``plugin_state(name)``, ``hooks.notify/call``, ``service(name)``,
  ``accounts`` (users, sessions, audit), ``with_redis``; ``hub.on_control`` / ``hub.send_control``
  for node-to-node messages that are not about a room.
- Declarations: ``hookimpl`` / ``hookspec``, ``ApiHandler`` + ``endpoint``,
  ``StreamingBodyHandler`` for uploads (the body streamed to ``receive_chunk`` under its own
  ``max_body_size``, raised above ``MAX_JSON_BODY`` only once the caller is authorised), ``ws_event`` with ``EventContext`` and ``Reply``,
  ``requires`` for permissions, ``BaseModel`` for models, ``parse_size`` for a size setting
  written as the core's are (``10MiB`` or a number of bytes).
- The typed errors (``NotFound``, ``Conflict`` …), each rendered as the error envelope.
- ``StartupRefused(message)``, raised from ``vachat_startup`` when the node cannot work (a
  missing bucket): start-up stops and ``vachat serve`` exits with status 2 and the message.

A module may also set ``REQUIRES = ("chat",)`` (plugins it cannot work without),
``SCHEMAS_DIR`` / ``MIGRATIONS_DIR`` (when not ``schemas/`` and ``migrations/`` beside it).

    from vachat.plugin_api import hookimpl, ApiHandler, endpoint, ws_event, BaseModel
"""

import pluggy

from .config import Rate, StartupRefused, parse_size
from .db import BaseModel, JSONField, database, now
from .errors import (
    ApiError, Conflict, Forbidden, InternalError, NotFound, PayloadTooLarge, QuotaExceeded,
    RateLimited, TokenExpired, Unauthorized, Unavailable, UnsupportedMediaType, ValidationFailed,
)
from .events import ws_event
from .ids import new_id
from .interfaces import Accounts, App, Database, Hooks, Hub, Limiter, Mailer
from .rbac import requires
from .actor import Actor
from .web import ApiHandler, StreamingBodyHandler, endpoint
from .wire import json_dumps
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
    "hookimpl", "hookspec", "ApiHandler", "StreamingBodyHandler", "endpoint", "ws_event", "requires", "EventContext", "Reply",
    "BaseModel", "JSONField", "database", "now", "new_id", "Rate", "parse_size", "json_dumps",
    # what a plugin is handed
    "App", "Actor", "Accounts", "Database", "Hooks", "Hub", "Limiter", "Mailer",
    # errors
    "ApiError", "ValidationFailed", "Unauthorized", "TokenExpired", "Forbidden", "NotFound",
    "Conflict", "PayloadTooLarge", "UnsupportedMediaType", "RateLimited", "QuotaExceeded",
    "InternalError", "Unavailable",
    # stopping start-up (``vachat_startup``): the node exits with status 2 and the message
    "StartupRefused",
]
