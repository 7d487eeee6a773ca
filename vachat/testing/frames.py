"""Raw WebSocket: a client that reads only when told, which is how a stalled consumer looks."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct


async def raw_upgrade(port: int, headers: dict[str, str], rcvbuf: int | None = None) -> tuple[socket.socket, bytes]:
    """A hand-made WebSocket client: returns the socket and the bytes after the 101 response.
    It reads only when the test says so, which is how a stalled consumer looks to the server."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    lines = [
        "GET /ws HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}", "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
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
    """A masked client frame (RFC 6455 §5.3)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def parse_frames(buffer: bytes | bytearray) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete frames in ``buffer`` as ``(opcode, payload)``, and the unparsed rest."""
    frames, position = [], 0
    while len(buffer) - position >= 2:
        first, second = buffer[position], buffer[position + 1]
        assert first & 0x80, "fragmented frame"
        assert not first & 0x70, "RSV bits set: compressed or unknown extension"
        size, start = second & 0x7F, position + 2
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
        assert not second & 0x80, "server frames must not be masked"
        if len(buffer) < start + size:
            break
        frames.append((first & 0x0F, bytes(buffer[start:start + size])))
        position = start + size
    return frames, bytes(buffer[position:])
