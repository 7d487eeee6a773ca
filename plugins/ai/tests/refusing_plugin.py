"""A test plugin whose ``chat_message_before_store`` runs after the AI plugin's (``trylast``)
and refuses every message saying "forbidden": by then the AI plugin has reserved the reply slot."""

from typing import Any

from vachat.plugin_api import ValidationFailed, hookimpl

__version__ = "0.1"


@hookimpl(trylast=True)
def chat_message_before_store(message: dict[str, Any]) -> None:
    if "forbidden" in message["content"]:
        raise ValidationFailed("This word is not allowed here", details=[
            {"field": "content", "message": "contains a forbidden word"}])
