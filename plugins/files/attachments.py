"""Files attached to chat messages (the chat plugin's hooks; no import between the plugins).

Until the chat plugin is present nothing here is called and no file is readable through a
conversation.
"""

from __future__ import annotations

from vachat.plugin_api import Actor, App

__all__ = ["readable_through_chat"]


async def readable_through_chat(app: App, actor: Actor, file_id: str) -> bool:
    """Whether ``file_id`` is attached to a message of a conversation ``actor`` may read."""
    return False
