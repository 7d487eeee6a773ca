"""A test plugin implementing the AI plugin's ``ai_before_request`` hook: it drops every
message containing "secret" and adds a note to the system prompt."""

from typing import Any

from vachat.plugin_api import hookimpl

__version__ = "0.1"


@hookimpl
def ai_before_request(app: Any, conversation: dict[str, Any], messages: list[dict[str, str]]) -> None:
    messages[:] = [m for m in messages if "secret" not in m["content"]]
    messages[0] = {"role": "system", "content": messages[0]["content"] + " (redacted)"}
