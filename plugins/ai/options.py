"""What a message may ask of the reply to it: ``metadata.generation`` =
``{"maxTokens": int, "temperature": number}`` (both optional), the chat-completions
``max_tokens`` and ``temperature`` under the API's camelCase. The OpenAI-compatible ``/v1``
API sets it from its request; any client may.

Checked before the message is stored (``chat_message_before_store``): a bad value is 400 on
``metadata.generation.<name>``, and nothing is stored.
"""

from __future__ import annotations

from typing import Any

from vachat.plugin_api import ValidationFailed

from .providers import ReplyOptions

__all__ = ["reply_options", "MAX_TOKENS_LIMIT"]

# The largest reply a message may ask for: beyond every current model's output limit, so the
# provider, not vachat, is what refuses a too-large request.
MAX_TOKENS_LIMIT = 1_000_000
_FIELDS = {"maxTokens", "temperature"}


def _refuse(name: str, message: str) -> ValidationFailed:
    return ValidationFailed("Invalid generation options", details=[
        {"field": f"metadata.generation{'.' + name if name else ''}", "message": message}])


def reply_options(metadata: Any) -> ReplyOptions | None:
    """The options ``metadata`` asks for, None when it asks nothing; ``ValidationFailed``
    when they are malformed."""
    generation = metadata.get("generation") if isinstance(metadata, dict) else None
    if generation is None:
        return None
    if not isinstance(generation, dict):
        raise _refuse("", "must be an object with maxTokens and/or temperature")
    unknown = sorted(set(generation) - _FIELDS)
    if unknown:
        raise _refuse(unknown[0], "is not a generation option (maxTokens, temperature)")
    max_tokens = generation.get("maxTokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or not 1 <= max_tokens <= MAX_TOKENS_LIMIT):
        raise _refuse("maxTokens", f"must be a whole number from 1 to {MAX_TOKENS_LIMIT}")
    temperature = generation.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or not 0 <= temperature <= 2):
        raise _refuse("temperature", "must be a number from 0 to 2")
    if max_tokens is None and temperature is None:
        return None
    return ReplyOptions(max_tokens=max_tokens, temperature=None if temperature is None else float(temperature))
