"""The OpenAI chat-completions shapes: reading a request's messages, writing completions,
chunks and errors, as the official SDKs expect them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from vachat.plugin_api import ApiError, ValidationFailed

__all__ = ["Turn", "read_turn", "title_from", "completion", "chunk", "error_body", "finish_reason_of",
           "ModelNotFound", "ReplyFailed", "ERROR_TYPES"]

# OpenAI's error ``type`` for each status, so an SDK user sees the usual words.
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    409: "conflict_error", 413: "invalid_request_error", 415: "invalid_request_error", 429: "rate_limit_error",
    502: "api_error", 503: "service_unavailable_error",
}
# Longest title made from a first message (the conversation's own limit is 200).
TITLE_CHARS = 80
_SPACES = re.compile(r"\s+")


class ModelNotFound(ApiError):
    status, code, message = 404, "model_not_found", "The model does not exist"


class ReplyFailed(ApiError):
    status, code, message = 502, "AI_REPLY_FAILED", "The assistant could not answer"


@dataclass(frozen=True)
class Turn:
    """A request's messages, read: the system prompt, the history before the last user
    message, and that message."""
    system: str | None
    history: list[tuple[str, str]]
    last_user: str


def _text_of(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content)


def read_turn(messages: list[dict[str, Any]]) -> Turn:
    """``ValidationFailed`` on ``messages`` unless the last one is the user's."""
    if messages[-1]["role"] != "user":
        raise ValidationFailed("The last message must be the user's", details=[
            {"field": f"messages.{len(messages) - 1}.role", "message": "must be user: it is the message answered"}])
    system = [_text_of(m["content"]) for m in messages[:-1] if m["role"] in ("system", "developer")]
    history = [(m["role"], _text_of(m["content"])) for m in messages[:-1] if m["role"] in ("user", "assistant")]
    return Turn("\n\n".join(system) if system else None, history, _text_of(messages[-1]["content"]))


def title_from(text: str) -> str:
    title = _SPACES.sub(" ", text).strip()
    if len(title) > TITLE_CHARS:
        title = title[:TITLE_CHARS - 1].rstrip() + "…"
    return title or "New conversation"


def finish_reason_of(reply: dict[str, Any]) -> str:
    return "length" if (reply.get("metadata") or {}).get("finishReason") == "length" else "stop"


def usage_of(reply: dict[str, Any]) -> dict[str, int]:
    metadata = reply.get("metadata") or {}
    prompt, completion_tokens = int(metadata.get("promptTokens") or 0), int(metadata.get("completionTokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def completion(reply: dict[str, Any], model: str, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{reply['id']}", "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply["content"]},
                     "finish_reason": finish_reason_of(reply), "logprobs": None}],
        "usage": usage_of(reply),
    }


def chunk(message_id: str, model: str, created: int, delta: dict[str, Any], finish_reason: str | None = None,
          *, usage: dict[str, int] | None = None, include_usage: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"chatcmpl-{message_id}", "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if include_usage:
        body["usage"] = usage
    return body


def error_body(error: ApiError) -> dict[str, Any]:
    message = error.message
    if isinstance(error.details, list) and error.details:
        fields = "; ".join(f"{d.get('field')}: {d.get('message')}" for d in error.details if isinstance(d, dict))
        if fields:
            message = f"{message} ({fields})"
    error_type = "invalid_request_error" if isinstance(error, ModelNotFound) else \
        ERROR_TYPES.get(error.status, "api_error" if error.status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": error_type, "code": error.code, "param": None}}
