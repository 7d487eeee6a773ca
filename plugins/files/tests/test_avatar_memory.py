"""Avatar decoding is bounded, against a real ``vachat serve`` process: a picture announcing
more than MAX_AVATAR_PIXELS is refused before it is decoded, and four concurrent uploads of the
worst picture allowed (16 megapixels of RGBA, a few KiB of PNG) raise the server's peak
resident memory by less than 300 MiB (pictures are decoded one at a time)."""

import asyncio
import io

import pytest
from PIL import Image

from .helpers import multipart, raw_request
from .test_streaming import head, peak_rss

MiB = 1024 * 1024
# The bound for four concurrent worst-case avatars, over the server's peak before them.
PEAK_BUDGET = 300 * MiB
CONCURRENT = 4


def flat_png(size: tuple[int, int], mode: str = "RGBA") -> bytes:
    """A picture of many pixels in few bytes: one colour compresses to almost nothing."""
    out = io.BytesIO()
    Image.new(mode, size, (30, 90, 200, 255) if mode == "RGBA" else (30, 90, 200)).save(out, format="PNG")
    return out.getvalue()


async def post_avatar(port: int, data: bytes, name: str = "me.png") -> tuple[int | None, dict | None]:
    body, content_type = multipart((name, data, "image/png"))
    return await raw_request(port, head("/api/users/avatar", content_type,
                                        f"Content-Length: {len(body)}\r\nConnection: close\r\n"), [body],
                             read_timeout=120)


@pytest.mark.gen_test(timeout=240)
async def test_avatar_decoding_is_bounded_in_pixels_and_memory(server_process, tmp_path):
    server = server_process({"UPLOAD_PATH": str(tmp_path / "uploads")})
    await server.wait_ready()
    # Warm up: a small avatar brings Pillow, the codecs and the pools into memory.
    status, _ = await post_avatar(server.port, flat_png((640, 480)))
    assert status == 201
    # 7,000 × 7,000 = 49 megapixels in a few KiB: refused from its header, never decoded.
    bomb = flat_png((7000, 7000), "RGB")
    status, payload = await post_avatar(server.port, bomb)
    assert status == 415 and payload is not None and payload["code"] == "UNSUPPORTED_MEDIA_TYPE", payload

    before = peak_rss(server.process.pid)
    worst = flat_png((4000, 4000))  # exactly MAX_AVATAR_PIXELS (16,000,000), four bytes each
    answers = await asyncio.gather(*(post_avatar(server.port, worst) for _ in range(CONCURRENT)))
    after = peak_rss(server.process.pid)
    print(f"\npeak RSS before: {before / MiB:.1f} MiB; after {CONCURRENT} concurrent "
          f"{len(worst)}-byte 4000x4000 RGBA PNG avatars: {after / MiB:.1f} MiB "
          f"(+{(after - before) / MiB:.1f} MiB; the bound is +{PEAK_BUDGET / MiB:.0f} MiB)")
    assert [status for status, _ in answers] == [201] * CONCURRENT, answers
    assert after - before < PEAK_BUDGET
