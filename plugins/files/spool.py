"""The node's spool of uploads still arriving, and the keys objects get: what every storage
backend shares (``storage.py`` for the local disk, ``s3.py`` for a bucket).

An upload streams into a temporary file in ``<UPLOAD_PATH>/.incoming`` on a worker thread
(``SpooledUpload.write``); checks and rewrites read it there; ``commit()`` hands it to the
backend's ``keep(path, key)`` under a key made here (128 random bits, ``ab/cd/<32 hex>``), and
``discard()`` removes it. Nothing of the user's input ever becomes part of a key or a path.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, Awaitable, BinaryIO, Callable

__all__ = ["SpooledUpload", "Spool", "INCOMING_DIR", "KEY_PATTERN", "READ_CHUNK_BYTES", "RunBlocking",
           "new_key", "check_key"]

#: Folder (under the upload path) of uploads still arriving: on the same file system as the
#: local backend's shards, so its ``commit`` is a rename, and away from them, so a half-written
#: file never has a key.
INCOMING_DIR = ".incoming"
# 128 random bits per key: unguessable and never colliding in practice. The first two pairs of
# hex digits shard the keys (65,536 folders on disk) so no directory grows to millions of entries.
KEY_PATTERN = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{32}$")
_TEMP_PATTERN = re.compile(r"^[0-9a-f]{32}\.part$")
#: Bytes read from storage and written to the socket at a time: large enough that per-chunk
#: overhead is small, small enough that hundreds of parallel downloads stay cheap.
READ_CHUNK_BYTES = 256 * 1024

#: ``app.run_blocking``: a blocking call on a worker thread, awaited.
RunBlocking = Callable[..., Awaitable[Any]]


def new_key(token: str) -> str:
    """The key of the object made from the upload ``token`` (32 hex digits)."""
    return f"{token[:2]}/{token[2:4]}/{token}"


def check_key(key: str) -> str:
    """``key`` if it is one a backend made; ``ValueError`` otherwise."""
    if not KEY_PATTERN.match(key or ""):
        raise ValueError("not a storage key")
    return key


class SpooledUpload:
    """A ``PendingObject`` in the local spool; ``keep(path, key)`` is the backend's way of
    making it permanent (a rename, or a copy to a bucket)."""

    def __init__(self, folder: Path, run_blocking: RunBlocking,
                 keep: Callable[[Path, str], Awaitable[None]]) -> None:
        self._token = secrets.token_hex(16)
        self._run_blocking = run_blocking
        self._keep = keep
        self.path = folder / f"{self._token}.part"
        # Exclusive create: a token collision (never expected) fails loudly instead of sharing.
        self._file: BinaryIO | None = open(self.path, "xb")

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise ValueError("the upload was closed")
        self._file.write(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def commit(self) -> str:
        await self._run_blocking(self.close)
        key = new_key(self._token)
        await self._keep(self.path, key)
        return key

    async def discard(self) -> None:
        await self._run_blocking(self._remove)

    def _remove(self) -> None:
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class Spool:
    """The node's folder of uploads still arriving (``<UPLOAD_PATH>/.incoming``), whatever the
    backend. Blocking methods: call them on a worker thread."""

    def __init__(self, folder: Path, run_blocking: RunBlocking) -> None:
        self.folder = folder
        self._run_blocking = run_blocking

    def prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def create(self, keep: Callable[[Path, str], Awaitable[None]]) -> SpooledUpload:
        self.prepare()
        return SpooledUpload(self.folder, self._run_blocking, keep)

    def stale(self, older_than: float) -> list[str]:
        cutoff = time.time() - older_than
        if not self.folder.is_dir():
            return []
        return [entry.name for entry in os.scandir(self.folder)
                if _TEMP_PATTERN.match(entry.name) and entry.stat(follow_symlinks=False).st_mtime <= cutoff]

    def remove(self, name: str) -> bool:
        if not _TEMP_PATTERN.match(name):
            raise ValueError("not a temporary upload name")
        try:
            (self.folder / name).unlink()
            return True
        except FileNotFoundError:
            return False
