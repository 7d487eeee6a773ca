"""Uploads at the transport level: an upload twice the limit is refused while it streams,
with the server's memory flat and nothing left on disk; a client that vanishes mid-upload
leaves nothing either."""

import asyncio
import hashlib

import pytest
from vachat.testing import eventually

from .helpers import incoming, multipart, raw_request

MiB = 1024 * 1024
CHUNK = 64 * 1024


def chunked(pieces):
    for piece in pieces:
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


def text_upload_pieces(size: int, boundary: str):
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
           f"Content-Type: text/plain\r\n\r\n").encode()
    line = b"all work and no play makes a dull upload\n" * 1598  # 65,536 - 62 bytes of text
    sent = 0
    while sent < size:
        piece = line[: size - sent]
        sent += len(piece)
        yield piece
    yield f"\r\n--{boundary}--\r\n".encode()


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def head(port_path: str, content_type: str, extra: str) -> str:
    return (f"POST {port_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer test:alice\r\n"
            f"Content-Type: {content_type}\r\n{extra}\r\n")


async def started_and_warm(server) -> int:
    """Once ``server`` is ready and one small upload has brought every import and pool (the S3
    client's too) into memory: its peak resident set, in bytes."""
    await server.wait_ready()
    body, content_type = multipart(("warm.txt", b"warm up\n", "text/plain"))
    status, _ = await raw_request(server.port, head("/api/files/upload", content_type,
                                  f"Content-Length: {len(body)}\r\nConnection: close\r\n"), [body])
    assert status == 201
    return peak_rss(server.process.pid)


@pytest.mark.gen_test(timeout=180)
async def test_twice_the_limit_is_413_while_streaming_with_memory_flat_and_no_file_left(
        server_process, tmp_path, files_storage, store_at):
    limit = 16 * MiB
    uploads = tmp_path / "uploads"
    server = server_process({"MAX_FILE_SIZE": str(limit), "UPLOAD_PATH": str(uploads), **files_storage})
    before = await started_and_warm(server)

    # Chunked: no length up front, so the limit can only be enforced as the bytes arrive.
    boundary = "streamtest0123"
    status, payload = await raw_request(
        server.port, head("/api/files/upload", f"multipart/form-data; boundary={boundary}", "Transfer-Encoding: chunked\r\n"),
        chunked(text_upload_pieces(2 * limit, boundary)))
    assert status == 413 and payload is not None, payload
    assert payload["code"] == "PAYLOAD_TOO_LARGE"
    growth = peak_rss(server.process.pid) - before
    assert growth < limit // 4, f"peak RSS grew {growth / MiB:.1f} MiB during a {2 * limit / MiB:.0f} MiB upload"
    assert await eventually(lambda: incoming(uploads) == [])
    assert len(store_at(uploads).keys()) == 1  # the warm-up file only

    # Declared too large: refused before a byte of the body is read.
    status, payload = await raw_request(server.port, head(
        "/api/files/upload", f"multipart/form-data; boundary={boundary}", f"Content-Length: {2 * limit}\r\n"))
    assert status == 413 and payload is not None and payload["code"] == "PAYLOAD_TOO_LARGE"
    assert incoming(uploads) == []


@pytest.mark.gen_test(timeout=60)
async def test_a_client_that_disconnects_mid_upload_leaves_no_file(app, http_server, http_port, store):
    uploads = app.plugin_state("files").settings.upload_path
    boundary = "disconnect0123"
    pieces = list(text_upload_pieces(4 * MiB, boundary))
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    writer.write(head("/api/files/upload", f"multipart/form-data; boundary={boundary}",
                      f"Content-Length: {sum(map(len, pieces))}\r\n").encode())
    for piece in pieces[:20]:  # about 1.2 MiB of 4
        writer.write(piece)
        await writer.drain()
    # The server has started writing the file ...
    assert await eventually(lambda: any(p.stat().st_size > 0 for p in incoming(uploads)))
    writer.close()  # ... and the client goes away.
    assert await eventually(lambda: incoming(uploads) == [])
    assert store.keys() == []


@pytest.mark.gen_test(timeout=180)
async def test_a_large_upload_is_stored_and_served_whole_with_memory_flat(server_process, tmp_path, files_storage,
                                                                           store_at):
    size = 64 * MiB  # on S3: thirteen parts of a multipart upload
    server = server_process({"MAX_FILE_SIZE": str(80 * MiB), "UPLOAD_PATH": str(tmp_path / "uploads"), **files_storage})
    before = await started_and_warm(server)

    boundary = "largeupload0123"
    pieces = list(text_upload_pieces(size, boundary))
    status, payload = await raw_request(
        server.port, head("/api/files/upload", f"multipart/form-data; boundary={boundary}",
                          f"Content-Length: {sum(map(len, pieces))}\r\n"), pieces)
    assert status == 201 and payload is not None, payload
    growth = peak_rss(server.process.pid) - before
    # Flat: one part (5 MiB) in flight on S3, a few read buffers on disk; never the file.
    assert growth < size // 3, f"peak RSS grew {growth / MiB:.1f} MiB during a {size / MiB:.0f} MiB upload"
    file = payload["data"]
    assert file["size"] == size
    digest = hashlib.sha256(b"".join(pieces[1:-1])).hexdigest()
    assert file["sha256"] == digest
    got = await server.fetch(f"/api/files/{file['id']}/download", headers={"Authorization": "Bearer test:alice",
                                                                         "Range": f"bytes={size - 100}-"})
    assert got.code == 206 and got.body == b"".join(pieces[1:-1])[-100:]
    assert len(store_at(tmp_path / "uploads").keys()) == 2
