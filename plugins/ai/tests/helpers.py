"""Shared steps of the AI plugin's tests: conversations, messages, and reading one reply's frames."""

from __future__ import annotations

from typing import Any

ALICE, BOB = "alice", "bob"
# The frames of one reply, in the order docs/websocket.md gives.
AI_EVENTS = ("ai-typing", "ai-delta", "ai-done")


async def create_conversation(fetch: Any, user: Any = ALICE, **fields: Any) -> dict[str, Any]:
    response = await fetch("/api/chat/conversations", method="POST", json=fields, user=user)
    assert response.code == 201, response.body
    return response.data


async def ask(fetch: Any, conversation_id: str, content: str = "hello there", user: Any = ALICE,
              expect: int | None = 201, **fields: Any) -> Any:
    """Send a message that asks for an AI reply; returns the response (of status ``expect``,
    unless it is None)."""
    response = await fetch("/api/chat/message", method="POST", user=user,
                           json={"conversationId": conversation_id, "content": content,
                                 "requiresAIResponse": True, **fields})
    assert expect is None or response.code == expect, response.body
    return response


async def connect(ws_connect: Any, user: Any = ALICE) -> Any:
    socket = await ws_connect(user=user)
    await socket.receive("ready")
    return socket


async def join(socket: Any, conversation_id: str, since: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"conversationId": conversation_id, **({"since": since} if since else {})}
    reply = await socket.request("join-conversation", data, timeout=10)
    assert reply["type"] == "ack", reply
    return reply["data"]


async def reply_frames(socket: Any, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The frames of the next reply, in arrival order, from ``ai-typing`` true to ``ai-typing``
    false (the assistant's ``new-message`` included; other frames left alone)."""
    frames: list[dict[str, Any]] = []
    while True:
        frame = await socket.receive(timeout=timeout)
        kind = frame["type"]
        if kind in AI_EVENTS or (kind == "new-message" and frame["data"]["role"] == "assistant"):
            frames.append(frame)
        if kind == "ai-typing" and frame["data"]["typing"] is False:
            return frames


def check_reply(frames: list[dict[str, Any]], conversation_id: str) -> dict[str, Any]:
    """Assert the frames are one reply in the documented order; return the stored message."""
    kinds = [f["type"] for f in frames]
    deltas = [f["data"] for f in frames if f["type"] == "ai-delta"]
    assert kinds == ["ai-typing"] + ["ai-delta"] * len(deltas) + ["ai-done", "new-message", "ai-typing"], kinds
    assert frames[0]["data"] == {"conversationId": conversation_id, "typing": True}
    assert frames[-1]["data"] == {"conversationId": conversation_id, "typing": False}
    stored = frames[-2]["data"]
    done = frames[-3]["data"]
    assert [d["index"] for d in deltas] == list(range(len(deltas)))
    assert {d["messageId"] for d in deltas} <= {stored["id"]} and done["messageId"] == stored["id"]
    assert all(d["conversationId"] == conversation_id and d["delta"] for d in deltas)
    assert done == {"conversationId": conversation_id, "messageId": stored["id"],
                    "finishReason": stored["metadata"]["finishReason"]}
    assert stored["role"] == "assistant" and stored["userId"] is None
    if stored["type"] != "error":
        assert stored["content"] == "".join(d["delta"] for d in deltas)
    return stored
