"""Downloads: safe headers, byte ranges, conditional requests, and the download count."""

import pytest

from vachat.testing import assert_error

from .helpers import upload

DATA = bytes(range(256)) * 4096  # 1 MiB, every byte value, several read chunks long


@pytest.fixture
def audio_like():
    # A WAV header over our bytes: an allowed binary type whose content is easy to check.
    import struct

    size = len(DATA)
    header = b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 8000, 1, 8)
    return header + b"data" + struct.pack("<I", size) + DATA


async def count_of(fetch, file_id):
    return (await fetch(f"/api/files/{file_id}", user="alice")).data["downloadCount"]


@pytest.mark.gen_test
async def test_a_download_is_an_inert_attachment(app, fetch, audio_like):
    file = (await upload(fetch, "alice", "sound.wav", audio_like)).data
    assert file["mimeType"] == "audio/wav"
    got = await fetch(f"/api/files/{file['id']}/download", user="alice")
    assert got.code == 200 and got.body == audio_like
    headers = got.headers
    assert headers["Content-Type"] == "audio/wav"
    assert headers["Content-Length"] == str(len(audio_like))
    assert headers["Content-Disposition"] == "attachment; filename=\"sound.wav\"; filename*=UTF-8''sound.wav"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in headers["Content-Security-Policy"] and "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["ETag"] == f"\"{file['sha256']}\""
    assert headers["Accept-Ranges"] == "bytes"
    assert "no-store" not in headers["Cache-Control"] and "private" in headers["Cache-Control"]


@pytest.mark.gen_test
async def test_ranges_are_206_and_outside_the_file_416(app, fetch, audio_like):
    file = (await upload(fetch, "alice", "sound.wav", audio_like)).data
    url, total = f"/api/files/{file['id']}/download", len(audio_like)

    middle = await fetch(url, user="alice", headers={"Range": "bytes=100-299"})
    assert middle.code == 206 and middle.body == audio_like[100:300]
    assert middle.headers["Content-Range"] == f"bytes 100-299/{total}"
    assert middle.headers["Content-Length"] == "200"

    tail = await fetch(url, user="alice", headers={"Range": "bytes=-10"})
    assert tail.code == 206 and tail.body == audio_like[-10:]
    rest = await fetch(url, user="alice", headers={"Range": f"bytes={total - 5}-"})
    assert rest.body == audio_like[-5:]
    beyond_end = await fetch(url, user="alice", headers={"Range": f"bytes=0-{total * 2}"})
    assert beyond_end.code == 206 and beyond_end.body == audio_like

    outside = await fetch(url, user="alice", headers={"Range": f"bytes={total}-"})
    assert_error(outside, 416, "RANGE_NOT_SATISFIABLE")
    assert outside.headers["Content-Range"] == f"bytes */{total}"
    # Several ranges, or another ETag in If-Range: the whole file.
    several = await fetch(url, user="alice", headers={"Range": "bytes=0-1,5-6"})
    assert several.code == 200 and several.body == audio_like
    stale = await fetch(url, user="alice", headers={"Range": "bytes=0-1", "If-Range": '"other"'})
    assert stale.code == 200 and stale.body == audio_like


@pytest.mark.gen_test
async def test_if_none_match_is_304_without_a_body(app, fetch, audio_like):
    file = (await upload(fetch, "alice", "sound.wav", audio_like)).data
    url, etag = f"/api/files/{file['id']}/download", f"\"{file['sha256']}\""
    for header in (etag, f"W/{etag}", f"\"nope\", {etag}", "*"):
        cached = await fetch(url, user="alice", headers={"If-None-Match": header})
        assert cached.code == 304 and cached.body == b""
        assert cached.headers["ETag"] == etag
    changed = await fetch(url, user="alice", headers={"If-None-Match": '"something-else"'})
    assert changed.code == 200 and changed.body == audio_like


@pytest.mark.gen_test
async def test_the_count_grows_once_per_download_from_byte_zero(app, fetch, audio_like):
    file = (await upload(fetch, "alice", "sound.wav", audio_like)).data
    url = f"/api/files/{file['id']}/download"
    await fetch(url, user="alice")
    assert await count_of(fetch, file["id"]) == 1
    await fetch(url, user="alice", headers={"Range": "bytes=0-99"})  # a player's first request
    assert await count_of(fetch, file["id"]) == 2
    await fetch(url, user="alice", headers={"Range": "bytes=100-"})  # its continuation
    await fetch(url, user="alice", headers={"If-None-Match": f"\"{file['sha256']}\""})  # a revalidation
    await fetch(url, user="alice", headers={"Range": f"bytes={len(audio_like)}-"})  # a 416
    assert await count_of(fetch, file["id"]) == 2


HUGE = "9" * 4301  # past Python's int() limit (4,300 digits): int() of it raises ValueError


@pytest.mark.gen_test
@pytest.mark.parametrize("header", [f"bytes=0-{HUGE}", f"bytes={HUGE}-", f"bytes=-{HUGE}", "bytes=0-" + "1" * 20])
async def test_a_range_past_any_file_is_416(app, fetch, audio_like, header):
    file = (await upload(fetch, "alice", "sound.wav", audio_like)).data
    refused = await fetch(f"/api/files/{file['id']}/download", user="alice", headers={"Range": header})
    assert_error(refused, 416, "RANGE_NOT_SATISFIABLE")
    assert refused.headers["Content-Range"] == f"bytes */{len(audio_like)}"

