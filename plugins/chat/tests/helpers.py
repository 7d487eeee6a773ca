"""Shared steps of the chat tests: make a conversation, send a message, join over a socket."""

from __future__ import annotations

from typing import Any

ALICE, BOB, CAROL = "alice", "bob", "carol"
READ_ALL = {"X-Test-Permissions": "conversations.read_all"}
MISSING_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"  # well-formed, never made


async def create_conversation(fetch: Any, user: str = ALICE, **fields: Any) -> dict[str, Any]:
    response = await fetch("/api/chat/conversations", method="POST", json=fields, user=user)
    assert response.code == 201, response.body
    return response.data


async def send(fetch: Any, conversation_id: str, content: str = "hello", user: str = ALICE,
               expect: int = 201, **fields: Any) -> dict[str, Any]:
    response = await fetch("/api/chat/message", method="POST", user=user,
                           json={"conversationId": conversation_id, "content": content, **fields})
    assert response.code == expect, response.body
    return response.json


async def join(socket: Any, conversation_id: str, since: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"conversationId": conversation_id}
    if since is not None:
        data["since"] = since
    reply = await socket.request("join-conversation", data)
    assert reply["type"] == "ack", reply
    return reply["data"]


async def connect(ws_connect: Any, user: str = ALICE, **kwargs: Any) -> Any:
    socket = await ws_connect(user=user, **kwargs)
    await socket.receive("ready")
    return socket


# -- a hand-made WebSocket client that reads only when told (a stalled consumer) -----------

