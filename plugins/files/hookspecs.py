"""The hooks the files plugin offers to other plugins (declared through ``vachat_addhooks``).

Implement one with ``@hookimpl(optionalhook=True)`` from ``vachat.plugin_api`` when your plugin
works without the files plugin, taking only the arguments you need. Order and failures follow
the core's rules (``vachat.hookspecs``); hooks may be coroutines.
"""

from __future__ import annotations

from typing import Any

from vachat.plugin_api import hookspec


@hookspec
def files_uploaded(app: Any, file: dict[str, Any], actor: Any) -> Any:
    """A file was uploaded through ``POST /api/files/upload`` and stored (the 201 is on its way):
    ``file`` is its API shape (``id``, ``originalName``, ``mimeType``, ``size``, ``purpose`` …),
    ``actor`` the uploader, who owns it. Not called for avatars."""
