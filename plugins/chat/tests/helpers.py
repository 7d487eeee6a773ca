"""Shared steps of the chat tests: make a conversation, send a message, join over a socket."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
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


async def raw_upgrade(port: int, headers: dict[str, str], rcvbuf: int) -> tuple[socket.socket, bytes]:
    """Upgrade a plain socket with a small receive buffer; returns it and the bytes after 101."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    lines = ["GET /ws HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}", "Sec-WebSocket-Version: 13",
             *(f"{name}: {value}" for name, value in headers.items())]
    await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        assert chunk, "connection closed during the handshake"
        response += chunk
    head, _, rest = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock, rest


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 §5.3), payloads under 64 KiB."""
    mask = os.urandom(4)
    size = len(payload)
    header = struct.pack("!BB", 0x80 | opcode, 0x80 | size) if size < 126 else \
        struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def parse_frames(buffer: bytes | bytearray) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete server frames in ``buffer`` as ``(opcode, payload)``, and the rest."""
    frames, position = [], 0
    while len(buffer) - position >= 2:
        size, start = buffer[position + 1] & 0x7F, position + 2
        if size == 126:
            if len(buffer) < start + 2:
                break
            (size,) = struct.unpack("!H", buffer[start:start + 2])
            start += 2
        elif size == 127:
            if len(buffer) < start + 8:
                break
            (size,) = struct.unpack("!Q", buffer[start:start + 8])
            start += 8
        if len(buffer) < start + size:
            break
        frames.append((buffer[position] & 0x0F, bytes(buffer[start:start + size])))
        position = start + size
    return frames, bytes(buffer[position:])
