"""The hooks the AI plugin offers to other plugins (declared through ``vachat_addhooks``).

Implement one with ``@hookimpl`` (``@hookimpl(optionalhook=True)`` when your plugin works
without the AI plugin), taking only the arguments you need. Order and failures follow the
core's rules (``vachat.hookspecs``); hooks may be coroutines.
"""

from __future__ import annotations

from typing import Any

from vachat.plugin_api import App, MaybeAwaitable, hookspec


@hookspec
def ai_reply_delta(app: App, conversation_id: str, message_id: str, index: int, delta: str) -> MaybeAwaitable[None]:
    """A piece of a reply was published (the ``ai-delta`` frame ``index`` went out): on the node
    generating it, in order. Deltas are coalesced (at most 20 a second per reply), and the
    reply's stored text is exactly its deltas joined. Keep it cheap: it runs on every frame."""


@hookspec
def ai_reply_completed(app: App, conversation: dict[str, Any], message: dict[str, Any]) -> MaybeAwaitable[None]:
    """A reply was stored (after ``ai-done``): ``message`` is the assistant's message as chat
    stored it, with ``metadata.finishReason``, the token counts and, for a failed reply,
    ``type: "error"``. Not called when nothing was stored (the conversation was deleted)."""


@hookspec
def ai_before_request(app: App, conversation: dict[str, Any], messages: list[dict[str, str]]) -> MaybeAwaitable[None]:
    """A reply is about to be requested from the provider: edit ``messages`` in place.

    ``messages`` is the context in the chat-completions shape, ``[{"role", "content"}]``:
    the system messages first (the operator's prompt, then the conversation's own when it
    has one), then the most recent messages of the conversation's current
    branch that fit ``AI_CONTEXT_TOKENS``, oldest first, ending with the message being
    answered. Add, remove or rewrite entries (redact, add retrieved documents …); the return
    value is ignored. ``conversation`` is the chat API's wire shape. Raising an ``ApiError``
    stops this reply, stored as an ``error`` message that names the reason.
    """
