"""The public API for plugin authors: everything a plugin needs, from one import.

Built-in plugins use only what is exported here; if one ever needs to import from elsewhere
in ``vachat``, the API is missing something and belongs here instead.

    from vachat.plugin_api import hookimpl, ApiHandler, endpoint, ws_event, BaseModel
"""

import pluggy

from .config import Rate
from .db import BaseModel, JSONField, database, now
from .errors import (
    ApiError, Conflict, Forbidden, InternalError, NotFound, PayloadTooLarge, QuotaExceeded,
    RateLimited, TokenExpired, Unauthorized, Unavailable, UnsupportedMediaType, ValidationFailed,
)
from .events import ws_event
from .ids import new_id
from .web import Actor, ApiHandler, endpoint

#: Marks a function in a plugin module as the implementation of the hook of the same name
#: (see ``vachat.hookspecs`` for every hook, its arguments and when it is called).
hookimpl = pluggy.HookimplMarker("vachat")

__all__ = [
    "hookimpl", "ApiHandler", "endpoint", "ws_event", "Actor", "BaseModel", "JSONField", "database",
    "now", "new_id", "Rate", "ApiError", "ValidationFailed", "Unauthorized", "TokenExpired",
    "Forbidden", "NotFound", "Conflict", "PayloadTooLarge", "UnsupportedMediaType", "RateLimited",
    "QuotaExceeded", "InternalError", "Unavailable",
]
