"""The storage quota under concurrency, through the real server: uploads reserve their size
under a lock on the owner's usage, so a burst can never store more than the quota, and a
failed upload gives its reservation back. Runs on SQLite (the embedded pass) and on
PostgreSQL (the second pass), where each upload's check once saw the same free space."""

import asyncio

import pytest

from vachat.testing import assert_error, eventually

from plugins.files.models import File, Reservation

from .helpers import docx_bytes, incoming, multipart, upload

QUOTA = 200 * 1024
UPLOAD_SIZE = 140 * 1024
CONCURRENT_UPLOADS = 16
FIRST_SIZE = 10 * 1024
# What each upload holds back until all of them are nearly in (the closing boundary and more).
LAST_BYTES = 64


def request_head(body: bytes, content_type: str) -> str:
    return (f"POST /api/files/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer test:alice\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")


def uploads_of(app):
    return app.plugin_state("files").settings.upload_path


async def stored_bytes(app, owner_id: str) -> int:
    return await app.db.run(lambda: sum(f.size for f in File.select(File.size).where(File.owner_id == owner_id)))


async def reservations(app) -> int:
    return await app.db.run(lambda: Reservation.select().count())


@pytest.mark.gen_test(timeout=120)
@pytest.mark.vachat(config={"plugin_sections": {"files": {"user_quota": QUOTA}}})
async def test_concurrent_uploads_never_store_more_than_the_quota(app, fetch, http_port):
    # A first file, so the burst meets a user whose usage is already recorded.
    first = await upload(fetch, "alice", "first.txt", b"a" * FIRST_SIZE)
    assert first.code == 201, first.body
    bodies = [multipart((f"part{n}.txt", (f"{n:02d}" * (UPLOAD_SIZE // 2)).encode(), "text/plain"))
              for n in range(CONCURRENT_UPLOADS)]
    # Every body but its last bytes first, until the server holds all sixteen files being
    # received; then all the endings at once, so every upload reaches its quota check together.
    connections = [await asyncio.open_connection("127.0.0.1", http_port) for _ in bodies]
    for (reader, writer), (body, content_type) in zip(connections, bodies):
        writer.write(request_head(body, content_type).encode("latin-1") + body[:-LAST_BYTES])
    await asyncio.gather(*(writer.drain() for _, writer in connections))
    await eventually(lambda: len(incoming(uploads_of(app))) == CONCURRENT_UPLOADS,
                     what="every upload being received")
    for (reader, writer), (body, _) in zip(connections, bodies):
        writer.write(body[-LAST_BYTES:])
    answers = await asyncio.gather(*(reader.read() for reader, _ in connections))
    for _, writer in connections:
        writer.close()
    codes = sorted(int(answer[9:12]) for answer in answers)
    print(f"\n{CONCURRENT_UPLOADS} concurrent {UPLOAD_SIZE} B uploads against a {QUOTA} B quota: {codes}")
    # 140 KiB fits beside 10 KiB in a 200 KiB quota once: one upload stored, every other one a 413.
    assert codes == [201] + [413] * (CONCURRENT_UPLOADS - 1)
    assert all(b'"code":"PAYLOAD_TOO_LARGE"' in answer.replace(b" ", b"") for answer in answers
               if answer.startswith(b"HTTP/1.1 413"))
    assert await stored_bytes(app, "alice") == FIRST_SIZE + UPLOAD_SIZE
    assert await reservations(app) == 0


@pytest.mark.gen_test
@pytest.mark.vachat(config={"plugin_sections": {"files": {"user_quota": QUOTA}}})
async def test_a_failed_upload_gives_its_reservation_back(app, fetch):
    damaged = docx_bytes(with_document=False)  # sniffs as Word, fails the structure check after reserving
    refused = await upload(fetch, "alice", "fake.docx", damaged)
    assert_error(refused, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await reservations(app) == 0
    # Had the damaged file's bytes stayed reserved, this one would not fit beside them.
    filling = b"x" * (QUOTA - len(damaged) // 2)
    stored = await upload(fetch, "alice", "filling.txt", filling)
    assert stored.code == 201, stored.body
    assert await stored_bytes(app, "alice") == len(filling)
    assert_error(await upload(fetch, "alice", "more.txt", b"y" * len(damaged)), 413, "PAYLOAD_TOO_LARGE")
