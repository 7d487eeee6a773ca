"""Image work with Pillow: re-encoding uploads from their pixels alone (no EXIF GPS positions,
camera serials, comments, IPTC captions, PNG text chunks or colour profiles survive), and
turning an uploaded picture into an avatar.

Everything here but ``decode`` blocks (decoding, encoding, disk): run it through ``decode``,
on the node's one picture thread, so that one picture is decoded at a time (a decoded picture
takes up to four bytes a pixel, whatever its file size). A file is rewritten through a sibling temporary
file and ``os.replace``, so a failure halfway never leaves a half-written image where the
upload was.

Decompression bombs are refused before decoding: a picture whose header announces more than
``MAX_PIXELS`` (an avatar: ``max_avatar_pixels``), all its frames counted, is not an image we
accept, whatever its byte size.
"""

from __future__ import annotations

import asyncio
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from PIL import Image, ImageSequence, JpegImagePlugin, UnidentifiedImageError

from vachat.plugin_api import App

__all__ = ["strip_metadata", "make_avatar", "decode", "stop_decoding", "NotAnImage", "MAX_PIXELS", "AVATAR_EDGE"]

#: Largest picture decoded (all frames together): 50 megapixels is beyond any phone camera,
#: and decoding it takes at most ~200 MiB; a few hundred bytes of PNG can otherwise announce
#: gigapixels.
MAX_PIXELS = 50_000_000
#: Avatars are shown small: the longer edge is scaled down to this many pixels.
AVATAR_EDGE = 512
# Formats re-encoded from their pixels, by the type sniffing gave them.
_REENCODED = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF", "image/webp": "WEBP"}
# What of a picture's info is part of its image data (transparency, animation timing) and is
# kept; every other key (exif, xmp, comment, icc_profile, dpi, text chunks …) is dropped.
_PIXEL_INFO = frozenset({"transparency", "duration", "loop", "background", "disposal", "blend"})
_ORIENTATION_TAG = 0x0112
# EXIF orientation → the transposition that shows the picture upright (as ImageOps.exif_transpose).
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# The files plugin's state attribute holding the picture thread (see ``decode``).
_THREAD = "picture_thread"
T = TypeVar("T")


class NotAnImage(ValueError):
    """The bytes do not decode as a picture we accept."""


async def decode(app: App, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` (a function of this module) on the node's picture thread: one
    picture decoded at a time, always on the same thread. Callers wait on the IOLoop, holding
    no worker thread; and the memory one decode frees is what the next one reuses, where
    decodes spread over the worker threads would each leave a malloc arena that size behind."""
    state = app.plugin_state("files")
    thread = getattr(state, _THREAD, None)
    if thread is None:
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vachat-pictures")
        setattr(state, _THREAD, thread)
    return await asyncio.get_running_loop().run_in_executor(thread, functools.partial(fn, *args))


def stop_decoding(app: App) -> None:
    """At shutdown: end the picture thread once its current decode is done."""
    thread = getattr(app.plugin_state("files"), _THREAD, None)
    if thread is not None:
        thread.shutdown(wait=False, cancel_futures=True)


def _open(path: Path, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise NotAnImage(str(error)) from None
    width, height = image.size
    try:
        frames = getattr(image, "n_frames", 1)
    except (OSError, ValueError, EOFError) as error:  # counting the frames reads their headers
        image.close()
        raise NotAnImage(str(error)) from None
    if width * height * frames > max_pixels:
        image.close()
        raise NotAnImage("too many pixels")
    return image


def _pixels_only(frame: Image.Image) -> Image.Image:
    """A copy of ``frame`` with its pixels (and palette) and nothing else of what it carried."""
    clean = frame.copy()
    clean.info = {key: value for key, value in frame.info.items() if key in _PIXEL_INFO}
    return clean


def _upright(frame: Image.Image, orientation: int) -> Image.Image:
    """``frame`` turned the way its EXIF orientation said it is seen."""
    method = _ORIENTATIONS.get(orientation)
    if method is None:
        return frame
    turned = frame.transpose(method)
    turned.info = frame.info
    return turned


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block says nothing usable about orientation
        return 1


def strip_metadata(path: Path, mime_type: str) -> bool:
    """Rewrite the image at ``path`` from its pixels alone; returns whether it was rewritten
    (False for a type that is not a picture). The orientation EXIF described is applied to the
    pixels first so nothing turns sideways; an upright JPEG keeps its quantisation tables and
    chroma subsampling (no second round of compression loss), PNG is lossless, GIF, PNG and
    WebP keep their frames and timing."""
    image_format = _REENCODED.get(mime_type)
    if image_format is None:
        return False
    with _open(path, MAX_PIXELS) as image:
        orientation = _orientation(image)
        try:
            frames = [_upright(_pixels_only(frame), orientation) for frame in ImageSequence.Iterator(image)]
        except (OSError, ValueError, EOFError, Image.DecompressionBombError) as error:
            raise NotAnImage(str(error)) from None
        options: dict[str, Any] = {}
        if image_format == "JPEG":
            options = {"quality": 95} if orientation in _ORIENTATIONS else {
                "qtables": getattr(image, "quantization"), "subsampling": JpegImagePlugin.get_sampling(image)}
        elif image_format == "WEBP":
            options = {"lossless": bool(image.info.get("lossless")), "quality": 95}
        if len(frames) > 1:
            options.update(save_all=True, append_images=frames[1:])
        temporary = path.with_name(path.name + ".strip")
        try:
            frames[0].save(temporary, format=image_format, **options)
            os.replace(temporary, path)
        finally:
            if temporary.exists():
                temporary.unlink()
    return True


def make_avatar(source: Path, destination: Any, max_pixels: int) -> None:
    """Write ``source`` as a PNG avatar to ``destination``: oriented, scaled to at most
    ``AVATAR_EDGE`` pixels, re-encoded from the pixels alone (no metadata, no trailing bytes,
    no second frame survives). A JPEG is decoded already reduced (``draft``: 1/2 to 1/8 of its
    size, never below the avatar's), and every picture is scaled down before it is turned and
    converted, so the one decode is the only large buffer."""
    with _open(source, max_pixels) as image:
        if image.format not in ("JPEG", "PNG", "GIF", "WEBP"):
            raise NotAnImage(f"{image.format} is not an avatar format")
        orientation = _orientation(image)
        try:
            image.seek(0)
            if image.format == "JPEG":
                image.draft("RGB", (AVATAR_EDGE, AVATAR_EDGE))
            image.load()
            # Palette and 1-bit pictures would be scaled by picking pixels: convert them first.
            picture = image if image.mode in ("RGB", "RGBA") else image.convert("RGBA")
            picture.thumbnail((AVATAR_EDGE, AVATAR_EDGE))
        except (OSError, ValueError, EOFError, Image.DecompressionBombError) as error:
            raise NotAnImage(str(error)) from None
        avatar = _upright(_pixels_only(picture), orientation).convert("RGBA")
        avatar.info = {}
        avatar.save(destination, format="PNG", optimize=True)
