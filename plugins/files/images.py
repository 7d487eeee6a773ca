"""Image work with Pillow: stripping EXIF (GPS positions, camera serials) from uploads, and
turning an uploaded picture into an avatar.

Everything here blocks (decoding, encoding, disk): run it with ``app.run_blocking``. A file
is rewritten through a sibling temporary file and ``os.replace``, so a failure halfway never
leaves a half-written image where the upload was.

Decompression bombs are refused before decoding: a picture whose header announces more than
``MAX_PIXELS`` is not an image we accept, whatever its byte size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["strip_metadata", "make_avatar", "NotAnImage", "MAX_PIXELS", "AVATAR_EDGE"]

#: Largest picture decoded: 50 megapixels is beyond any phone camera, and decoding it takes
#: at most ~200 MiB; a few hundred bytes of PNG can otherwise announce gigapixels.
MAX_PIXELS = 50_000_000
#: Avatars are shown small: the longer edge is scaled down to this many pixels.
AVATAR_EDGE = 512
# Formats whose metadata we rewrite. GIF carries no EXIF.
_STRIPPABLE = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
# Info keys that carry EXIF or XMP (which may repeat the GPS position).
_METADATA_KEYS = ("exif", "xmp", "XML:com.adobe.xmp")


class NotAnImage(ValueError):
    """The bytes do not decode as a picture we accept."""


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise NotAnImage(str(error)) from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise NotAnImage("too many pixels")
    return image


def _has_metadata(image: Image.Image) -> bool:
    if any(image.info.get(key) for key in _METADATA_KEYS):
        return True
    try:
        return len(image.getexif()) > 0
    except Exception:  # a broken EXIF block is still one to remove
        return True


def strip_metadata(path: Path, mime_type: str) -> bool:
    """Rewrite the image at ``path`` without EXIF/XMP when it has any; returns whether it
    changed. JPEG keeps its quantisation tables (``quality="keep"``), PNG is lossless, and the
    orientation EXIF described is applied to the pixels first so nothing turns sideways."""
    image_format = _STRIPPABLE.get(mime_type)
    if image_format is None:
        return False
    with _open(path) as image:
        if not _has_metadata(image):
            return False
        try:
            image.load()
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise NotAnImage(str(error)) from None
        oriented = ImageOps.exif_transpose(image)
        rotated = oriented is not image
        options: dict[str, Any] = {}
        if image_format == "JPEG":
            # "keep" reuses the original tables: no second round of compression loss. It only
            # applies to an unrotated JPEG.
            options = {"quality": 95} if rotated else {"quality": "keep", "subsampling": "keep"}
        elif image_format == "WEBP":
            options = {"lossless": bool(image.info.get("lossless")), "quality": 95}
            if getattr(image, "is_animated", False):
                options["save_all"] = True
        target = oriented if rotated else image
        temporary = path.with_name(path.name + ".strip")
        try:
            target.save(temporary, format=image_format, exif=b"", xmp=b"", **options)
            os.replace(temporary, path)
        finally:
            if temporary.exists():
                temporary.unlink()
    return True


def make_avatar(source: Path, destination: Any) -> None:
    """Write ``source`` as a PNG avatar to ``destination``: oriented, scaled to at most
    ``AVATAR_EDGE`` pixels, re-encoded from the pixels alone (no metadata, no trailing bytes,
    no second frame survives)."""
    with _open(source) as image:
        if image.format not in ("JPEG", "PNG", "GIF", "WEBP"):
            raise NotAnImage(f"{image.format} is not an avatar format")
        try:
            image.seek(0)
            image.load()
            picture = ImageOps.exif_transpose(image)
        except (OSError, ValueError, EOFError, Image.DecompressionBombError) as error:
            raise NotAnImage(str(error)) from None
        picture = picture.convert("RGBA")
        picture.thumbnail((AVATAR_EDGE, AVATAR_EDGE))
        picture.save(destination, format="PNG", optimize=True)
