"""Uploaded pictures and avatars are re-encoded from their pixels alone: a JPEG's comment
and IPTC caption, a PNG's text chunks, a GIF's comment, a WebP's EXIF and XMP: none of it is
in the bytes served back, while the picture itself is."""

import io
import struct

import pytest
from PIL import Image, PngImagePlugin

from vachat.testing import assert_error

from .helpers import upload

GPS_TEXT = b"GPS 48.8584N 2.2945E SECRET-COMMENT"
IPTC_CAPTION = b"SECRET-IPTC-CAPTION at home"
PNG_TEXT = "SECRET-PNG-TEXT at home"
GIF_COMMENT = b"SECRET-GIF-COMMENT 48.8584N"
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">SECRET-XMP 48.8584N</x:xmpmeta>'


def picture(mode="RGB", size=(96, 64)):
    image = Image.new(mode, size)
    image.putdata([((x * 7) % 256, (y * 11) % 256, 90) if mode == "RGB" else (x + y) % 200
                   for y in range(size[1]) for x in range(size[0])])
    return image


def iptc_segment(caption: bytes) -> bytes:
    """An APP13 Photoshop segment holding one IPTC record (2:120, the caption)."""
    record = b"\x1c\x02\x78" + struct.pack(">H", len(caption)) + caption
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(record)) + record
    body = b"Photoshop 3.0\x00" + resource
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body


def jpeg_with_comment_and_iptc() -> bytes:
    out = io.BytesIO()
    picture().save(out, format="JPEG", quality=90, comment=GPS_TEXT, extra=iptc_segment(IPTC_CAPTION))
    return out.getvalue()


def png_with_text_chunks() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Location", PNG_TEXT)
    info.add_itxt("Description", PNG_TEXT + " (itxt)")
    info.add_text("Comment", PNG_TEXT + " (ztxt)", zip=True)
    out = io.BytesIO()
    picture().save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def gif_with_comment() -> bytes:
    out = io.BytesIO()
    frames = [picture("L"), picture("L").transpose(Image.Transpose.ROTATE_180)]
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], comment=GIF_COMMENT,
                   duration=[120, 80], loop=0)
    return out.getvalue()


def webp_with_exif_and_xmp() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "SECRET-EXIF description"  # ImageDescription
    out = io.BytesIO()
    picture().save(out, format="WEBP", quality=90, exif=exif.tobytes(), xmp=XMP)
    return out.getvalue()


CASES = [
    ("photo.jpg", jpeg_with_comment_and_iptc, [GPS_TEXT, b"SECRET", b"Photoshop 3.0", b"8BIM"]),
    ("drawing.png", png_with_text_chunks, [PNG_TEXT.encode(), b"SECRET", b"tEXt", b"iTXt", b"zTXt"]),
    ("moving.gif", gif_with_comment, [GIF_COMMENT, b"SECRET"]),
    ("photo.webp", webp_with_exif_and_xmp, [b"SECRET", b"EXIF", b"XMP "]),
]


@pytest.mark.gen_test
@pytest.mark.parametrize("name, make, leaks", CASES, ids=[case[0] for case in CASES])
async def test_an_upload_keeps_its_pixels_and_nothing_else(fetch, name, make, leaks):
    original = make()
    assert all(leak in original for leak in leaks[:1])  # the metadata is really in what is sent
    response = await upload(fetch, "alice", name, original)
    assert response.code == 201, response.body
    served = (await fetch(f"/api/files/{response.data['id']}/download", user="alice")).body
    assert response.data["size"] == len(served)
    for leak in leaks:
        assert leak not in served, leak
    with Image.open(io.BytesIO(original)) as before, Image.open(io.BytesIO(served)) as after:
        assert (after.format, after.size, getattr(after, "n_frames", 1)) == \
               (before.format, before.size, getattr(before, "n_frames", 1))
        if before.format == "PNG":  # lossless: the very same pixels
            assert after.tobytes() == before.tobytes()
        if before.format == "GIF":  # the animation's timing is image data: kept
            assert (after.info.get("duration"), after.info.get("loop")) == (120, 0)


@pytest.mark.gen_test
@pytest.mark.parametrize("name, make, leaks", CASES, ids=[case[0] for case in CASES])
async def test_an_avatar_keeps_nothing_but_its_pixels(fetch, make_user, name, make, leaks):
    alice = await make_user()
    response = await upload(fetch, alice, name, make(), path="/api/users/avatar")
    assert response.code == 201, response.body
    served = (await fetch(response.data["avatarUrl"])).body
    for leak in leaks:
        assert leak not in served, leak
    with Image.open(io.BytesIO(served)) as avatar:
        assert avatar.format == "PNG" and avatar.size == (96, 64)
        assert set(avatar.info) <= {"dpi"}  # nothing but what PNG itself says


@pytest.mark.gen_test
async def test_keep_exif_still_keeps_the_upload_as_sent(fetch):
    original = jpeg_with_comment_and_iptc()
    response = await upload(fetch, "alice", "photo.jpg", original, keepExif="true")
    assert response.code == 201, response.body
    assert (await fetch(f"/api/files/{response.data['id']}/download", user="alice")).body == original


@pytest.mark.gen_test
async def test_a_picture_that_does_not_decode_is_refused(fetch):
    broken = jpeg_with_comment_and_iptc()[:300]  # the headers, then nothing
    assert_error(await upload(fetch, "alice", "cut.jpg", broken), 415, "UNSUPPORTED_MEDIA_TYPE")
