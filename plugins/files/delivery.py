"""Sending a stored file: conditional requests, byte ranges and chunked reads from storage.

- ``ETag`` is the content's SHA-256 (strong: stored content never changes under an id), so
  ``If-None-Match`` answers 304 without reading a byte.
- ``Range: bytes=a-b`` (one range: what media players and resuming downloads send) answers 206
  with ``Content-Range``; a range that starts past the end is 416 with ``bytes */size``.
  Several ranges are answered with the whole file (RFC 9110 lets a server ignore ``Range``).
  ``If-Range`` with another ETag also gets the whole file.
- The body is read from storage in chunks (``READ_CHUNK_BYTES`` from the local disk, on a worker
  thread; a streamed GET from a bucket), each flushed before the next is read: memory stays
  flat however large the file, and a slow client slows the reads.

This module must never read a whole file into memory, and never let a client's header pick
what is read other than the byte offsets of the one file already chosen.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

from tornado.iostream import StreamClosedError

from vachat.plugin_api import ApiError

__all__ = ["ByteRange", "etag_of", "etag_matches", "requested_range", "send_file",
           "RangeNotSatisfiable"]

# ASCII digits only (``\d`` also takes other scripts' digits).
_RANGE = re.compile(r"^\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*$", re.IGNORECASE)
#: A byte position of more digits than this lies past any file (2**63 has 19 digits): such a
#: range is not satisfiable, and is refused before Python's int() (which fails on more than
#: 4,300 digits) sees it.
MAX_POSITION_DIGITS = 19


class RangeNotSatisfiable(ApiError):
    """The requested range lies outside the file: 416, naming the file's size."""

    status, code, message = 416, "RANGE_NOT_SATISFIABLE", "The requested range is outside the file"

    def __init__(self, size: int) -> None:
        super().__init__(headers={"Content-Range": f"bytes */{size}"})


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def etag_of(sha256: str) -> str:
    return f'"{sha256}"'


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` (weak comparison) or ``If-Range`` value names ``etag``."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(candidate.strip().removeprefix("W/") == etag for candidate in header.split(","))


def requested_range(headers: Any, size: int, etag: str) -> ByteRange | None:
    """The one range to send, or None for the whole file; ``RangeNotSatisfiable`` when the
    range cannot be served."""
    header = headers.get("Range")
    if not header or "," in header:
        return None
    if_range = headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None  # a unit or syntax we do not know: ignored, as RFC 9110 says
    first, last = match.groups()
    if not first and not last:
        return None
    if len(first) > MAX_POSITION_DIGITS or len(last) > MAX_POSITION_DIGITS:
        raise RangeNotSatisfiable(size)
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(size)
    return ByteRange(start, min(end, size - 1))


async def send_file(handler: Any, storage: Any, key: str, byte_range: ByteRange | None, size: int) -> bool:
    """Write the file (or its range) to ``handler`` chunk by chunk as storage yields them;
    returns False when the client went away first (the read is closed at once). Headers and
    status are the caller's; ``FileNotFoundError`` when the object is gone."""
    start, length = (byte_range.start, byte_range.length) if byte_range else (0, size)
    # A file that shrank under us (deleted meanwhile) ends the response short.
    async with contextlib.aclosing(storage.read(key, start, length)) as chunks:
        async for chunk in chunks:
            handler.write(chunk)
            try:
                await handler.flush()
            except StreamClosedError:
                return False
    return True
