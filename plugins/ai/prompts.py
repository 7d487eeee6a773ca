"""The system messages that open every reply's context.

The operator's ``AI_SYSTEM_PROMPT`` always goes first, and a conversation cannot replace it.
A conversation's own ``metadata.systemPrompt`` follows it as a second system message: at most
``AI_USER_SYSTEM_PROMPT_MAX`` characters (0: conversations cannot set one), refused longer when
the conversation is created or changed (``check_conversation_prompt``, through chat's
``chat_conversation_before_store``), and counted in ``AI_CONTEXT_TOKENS`` with everything
else, so it cannot make a request bigger than the operator allows.
"""

from __future__ import annotations

from typing import Any, Mapping

from vachat.plugin_api import ValidationFailed

from .providers import CHARS_PER_TOKEN, ChatMessage, estimate_tokens

__all__ = ["PROMPT_FIELD", "check_conversation_prompt", "system_messages"]

#: Where a conversation keeps its own prompt, as error details name it.
PROMPT_FIELD = "metadata.systemPrompt"


def _refuse(message: str) -> ValidationFailed:
    return ValidationFailed("The conversation's system prompt is not accepted",
                            details=[{"field": PROMPT_FIELD, "message": message}])


def check_conversation_prompt(metadata: Any, max_chars: int) -> None:
    """Refuse (400 on ``metadata.systemPrompt``) a prompt that is not text or is longer than
    ``max_chars``; any prompt at all when ``max_chars`` is 0. Absent, null or empty is fine."""
    if not isinstance(metadata, Mapping):
        return
    prompt = metadata.get("systemPrompt")
    if prompt is None or prompt == "":
        return
    if not isinstance(prompt, str):
        raise _refuse("must be a string")
    if max_chars == 0:
        raise _refuse("conversations cannot set a system prompt on this server")
    if len(prompt) > max_chars:
        raise _refuse(f"must be at most {max_chars} characters")


def system_messages(config: Mapping[str, Any], conversation: Mapping[str, Any]) -> list[ChatMessage]:
    """``[operator prompt, conversation prompt]`` (either left out when empty). The
    conversation's prompt is cut to ``AI_USER_SYSTEM_PROMPT_MAX`` characters and to what
    ``AI_CONTEXT_TOKENS`` leaves after the operator's (one stored before the cap, or a budget
    smaller than the cap, never overruns it)."""
    operator = config["system_prompt"]
    messages: list[ChatMessage] = [{"role": "system", "content": operator}] if operator else []
    own = (conversation.get("metadata") or {}).get("systemPrompt")
    if isinstance(own, str) and own.strip():
        room_tokens = int(config["context_tokens"]) - estimate_tokens(operator)
        own = own[:max(0, min(int(config["user_system_prompt_max"]), room_tokens * CHARS_PER_TOKEN))]
        if own.strip():
            messages.append({"role": "system", "content": own})
    return messages
