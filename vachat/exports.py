"""A user's data export: the entries plugins add, written out as one streamed ZIP archive.

``GET /api/users/me/export`` hands a ``UserExport`` to every plugin's
``vachat_user_exporting`` hook; each adds documents (``add_json``) or streams it can open
later (``add_stream``). ``zip_chunks()`` then yields the archive a piece at a time: an entry's
source is opened only when the archive reaches it, and compression runs on worker threads
(``stream_zip``), so neither memory nor the IOLoop grows with the size of an account.

Names are paths inside the archive. They are cleaned here, once: no absolute paths, no ``..``,
no control characters, no duplicates (a second ``a.txt`` in a folder becomes ``a (2).txt``),
so an archive made from user-supplied names unpacks safely anywhere.
"""

from __future__ import annotations

import datetime
import posixpath
import re
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from stream_zip import NO_COMPRESSION_64, ZIP_64, async_stream_zip

from .wire import json_dumpb

__all__ = ["UserExport", "ChunkOpener"]

#: Opens an entry's contents when the archive reaches it: an async iterator of bytes.
ChunkOpener = Callable[[], AsyncIterator[bytes]]

# Owner read/write, as an archive tool shows a regular file.
_FILE_MODE = 0o600
# One path component: what a common file system accepts, leaving room for " (N)".
_MAX_COMPONENT_CHARS = 200
_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\\:*?\"<>|]")
# File types that are compressed already: storing them again compressed costs CPU for nothing.
_STORED_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".zip", ".gz", ".mp3", ".mp4", ".pdf", ".docx")


@dataclass
class _Entry:
    name: str
    opener: ChunkOpener
    compress: bool


def _clean_component(component: str) -> str:
    component = _UNSAFE_CHARACTERS.sub("_", component).strip()
    if component in ("", ".", ".."):
        component = "_"
    return component[:_MAX_COMPONENT_CHARS]


def clean_path(name: str) -> str:
    """A relative archive path made of safe components (``../x`` → ``_/x``)."""
    return "/".join(_clean_component(part) for part in name.replace("\\", "/").split("/") if part != "")


class UserExport:
    """What one user's export will hold, in the order entries were added."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self._entries: list[_Entry] = []
        self._names: set[str] = set()

    def add_json(self, name: str, data: Any) -> str:
        """Add a document, encoded as indented JSON; returns the name it got in the archive."""
        encoded = json_dumpb(data)

        async def chunks() -> AsyncIterator[bytes]:
            yield encoded

        return self._add(name, chunks, compress=True)

    def add_stream(self, name: str, opener: ChunkOpener) -> str:
        """Add an entry whose bytes ``opener()`` yields when the archive reaches it; returns
        the name it got in the archive."""
        return self._add(name, opener, compress=not name.lower().endswith(_STORED_SUFFIXES))

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self._entries]

    def _add(self, name: str, opener: ChunkOpener, *, compress: bool) -> str:
        unique = self._unique(clean_path(name) or "_")
        self._names.add(unique)
        self._entries.append(_Entry(unique, opener, compress))
        return unique

    def _unique(self, name: str) -> str:
        if name not in self._names:
            return name
        stem, suffix = posixpath.splitext(name)
        number = 2
        while f"{stem} ({number}){suffix}" in self._names:
            number += 1
        return f"{stem} ({number}){suffix}"

    def zip_chunks(self) -> AsyncIterator[bytes]:
        """The archive, a chunk at a time (ZIP64: no entry or total size limit)."""
        modified = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)

        async def members() -> AsyncIterator[tuple[str, datetime.datetime, int, Any, AsyncIterator[bytes]]]:
            for entry in self._entries:
                method = ZIP_64 if entry.compress else NO_COMPRESSION_64
                yield entry.name, modified, _FILE_MODE, method, entry.opener()

        return async_stream_zip(members())
