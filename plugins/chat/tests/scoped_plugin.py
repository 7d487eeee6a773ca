"""A test plugin whose ``chat_message_before_store`` declares the drafts it acts on
(``acts_on``): only messages whose content asks for a check."""

from __future__ import annotations

from typing import Any

from vachat.plugin_api import ValidationFailed, hookimpl

from plugins.chat.api import acts_on

__version__ = "1.0"
REQUIRES = ("chat",)

seen: list[dict[str, Any]] = []


@hookimpl
@acts_on(lambda message: "check me" in message["content"])
def chat_message_before_store(message):
    seen.append(message)
    if "refuse" in message["content"]:
        raise ValidationFailed("Refused by the scoped filter")
