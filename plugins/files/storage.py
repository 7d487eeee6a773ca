"""Where file contents live: the storage interface and the local disk backend.

The rest of the plugin talks to a ``StorageBackend`` and knows nothing of paths. The backend
generates every key itself (random, sharded): no part of a key or a path ever comes from
user input, and a key read back from the database is checked against the backend's own
pattern before it touches the file system.

An upload is written to a ``PendingObject``: a local temporary file that the upload streams
into, that checks (DOCX structure) and rewrites (EXIF stripping) may read and replace, and that
``commit()`` makes permanent in one step (the local backend: ``os.replace`` into its sharded
folder; an object store: one PUT, then the temporary file goes). ``discard()`` removes every
trace of an upload that failed. Every method blocks: callers run them with
``app.run_blocking``.

Choosing a backend: ``storage_backend = "local"`` (the default) or the name of a service that
another plugin publishes (``vachat_services``) implementing this interface, so an object store
is a plugin of its own and this one does not change.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

from vachat.plugin_api import App, ServiceKey

from .settings import PLUGIN, settings_of

__all__ = ["StorageBackend", "PendingObject", "LocalDiskStorage", "storage_of", "INCOMING_DIR"]

#: Folder (under the upload path) of uploads still arriving: on the same file system as the
#: shards, so ``commit`` is a rename, and away from them, so a half-written file never has a key.
INCOMING_DIR = ".incoming"
# 128 random bits per key: unguessable and never colliding in practice. The first two pairs of
# hex digits shard the folders (65,536 of them) so no directory grows to millions of entries.
_KEY_PATTERN = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{32}$")
_TEMP_PATTERN = re.compile(r"^[0-9a-f]{32}\.part$")


class PendingObject(Protocol):
    """An upload being written. ``path`` is a local file the plugin may read and replace."""

    path: Path

    def write(self, data: bytes) -> None:
        """Append bytes."""

    def close(self) -> None:
        """No more bytes will be written: ``path`` now holds the whole content."""

    def commit(self) -> str:
        """Make the content permanent; returns its key. The temporary file is gone after."""

    def discard(self) -> None:
        """Forget the upload and remove its temporary file; safe to call twice or after a failure."""


class StorageBackend(Protocol):
    """What the files plugin needs from a place that keeps bytes."""

    def create(self) -> PendingObject:
        """Start a new object (a temporary file to stream into)."""

    def open(self, key: str) -> BinaryIO:
        """A readable, seekable binary stream of a committed object; ``FileNotFoundError`` when
        it is gone."""

    def delete(self, key: str) -> bool:
        """Remove an object; returns whether it existed. Never raises for a missing one."""

    def exists(self, key: str) -> bool:
        """Whether a committed object is there."""

    def keys(self, *, older_than: float = 0.0) -> Iterator[str]:
        """Every committed key, optionally only those last written more than ``older_than``
        seconds ago (so a reconciliation never races an upload being committed)."""

    def stale_uploads(self, *, older_than: float) -> Iterator[str]:
        """Temporary files of uploads abandoned by a crash, older than ``older_than`` seconds
        (names, for reporting)."""

    def remove_stale_upload(self, name: str) -> bool:
        """Remove one of the ``stale_uploads``."""


class _LocalPending:
    def __init__(self, storage: "LocalDiskStorage", token: str) -> None:
        self._storage = storage
        self._token = token
        self.path = storage.incoming / f"{token}.part"
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

    def commit(self) -> str:
        self.close()
        # The row will say the file exists: make it so, even if it was rewritten since.
        with open(self.path, "rb") as written:
            os.fsync(written.fileno())
        key = f"{self._token[:2]}/{self._token[2:4]}/{self._token}"
        final = self._storage.path_of(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, final)
        return key

    def discard(self) -> None:
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class LocalDiskStorage:
    """Files on the local disk under ``root``: ``root/ab/cd/abcd….`` and ``root/.incoming``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.incoming = self.root / INCOMING_DIR
        self.incoming.mkdir(parents=True, exist_ok=True)

    def path_of(self, key: str) -> Path:
        """The path of ``key``; refuses anything that is not a key this backend made."""
        if not _KEY_PATTERN.match(key or ""):
            raise ValueError("not a storage key")
        return self.root / key

    def create(self) -> PendingObject:
        self.incoming.mkdir(parents=True, exist_ok=True)
        return _LocalPending(self, secrets.token_hex(16))

    def open(self, key: str) -> BinaryIO:
        return open(self.path_of(key), "rb")

    def delete(self, key: str) -> bool:
        try:
            self.path_of(key).unlink()
            return True
        except FileNotFoundError:
            return False

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def keys(self, *, older_than: float = 0.0) -> Iterator[str]:
        cutoff = time.time() - older_than
        for first in _hex_dirs(self.root):
            for second in _hex_dirs(first):
                for entry in os.scandir(second):
                    key = f"{first.name}/{second.name}/{entry.name}"
                    if _KEY_PATTERN.match(key) and entry.is_file(follow_symlinks=False) \
                            and entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                        yield key

    def stale_uploads(self, *, older_than: float) -> Iterator[str]:
        cutoff = time.time() - older_than
        if not self.incoming.is_dir():
            return
        for entry in os.scandir(self.incoming):
            if _TEMP_PATTERN.match(entry.name) and entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                yield entry.name

    def remove_stale_upload(self, name: str) -> bool:
        if not _TEMP_PATTERN.match(name):
            raise ValueError("not a temporary upload name")
        try:
            (self.incoming / name).unlink()
            return True
        except FileNotFoundError:
            return False


def _hex_dirs(parent: Path) -> Iterator[Path]:
    if not parent.is_dir():
        return
    for entry in os.scandir(parent):
        if len(entry.name) == 2 and all(c in "0123456789abcdef" for c in entry.name) \
                and entry.is_dir(follow_symlinks=False):
            yield Path(entry.path)


def storage_of(app: App) -> StorageBackend:
    """This application's storage backend, made on first use (servers and commands alike)."""
    state = app.plugin_state(PLUGIN)
    backend = getattr(state, "storage", None)
    if backend is None:
        settings = settings_of(app)
        if settings.storage_backend == "local":
            backend = LocalDiskStorage(settings.upload_path)
        else:
            backend = app.service(ServiceKey[StorageBackend](settings.storage_backend))
        state.storage = backend
    return backend
