"""Where file contents live: the storage interface, the local disk backend, and choosing the
backend (``FILES_STORAGE``). The spool every upload is first written to is ``spool.py``.

The rest of the plugin talks to a ``StorageBackend`` and knows nothing of paths or buckets. The
backend generates every key itself (random, sharded): no part of a key ever comes from user
input, and a key read back from the database is checked against ``KEY_PATTERN`` before it
touches a file system or a bucket.

An upload is written to a ``PendingObject``: a temporary file in the node's local spool
(``<UPLOAD_PATH>/.incoming``) that the upload streams into on a worker thread, that checks
(DOCX structure) and rewrites (EXIF stripping) may read and replace, and that ``commit()``
makes permanent in one step: the local backend renames it into its sharded folder, the S3
backend (``s3.py``) streams it to the bucket. ``discard()`` removes every trace of an upload
that failed.

The interface is async: a backend never blocks the IOLoop (the local one does its disk work on
``app.run_blocking``'s threads). Only ``PendingObject.write``/``close`` and
``StorageBackend.create`` block, as they touch the local spool: the upload receiver calls them
on its worker thread.

Choosing a backend: ``FILES_STORAGE`` = ``local`` (the default), ``s3``, or the name of a service
that another plugin publishes (``vachat_services``) implementing this interface.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import AsyncIterator, Protocol

from vachat.plugin_api import App, ServiceKey, StartupRefused

from .settings import PLUGIN, settings_of
from .spool import INCOMING_DIR, KEY_PATTERN, READ_CHUNK_BYTES, RunBlocking, Spool, check_key

__all__ = ["StorageBackend", "PendingObject", "LocalDiskStorage", "open_storage", "close_storage", "storage_of"]

log = logging.getLogger("vachat.plugins.files")


class PendingObject(Protocol):
    """An upload being written. ``path`` is a local file the plugin may read and replace."""

    path: Path

    def write(self, data: bytes) -> None:
        """Append bytes (blocking: on a worker thread)."""

    def close(self) -> None:
        """No more bytes will be written: ``path`` now holds the whole content (blocking)."""

    async def commit(self) -> str:
        """Make the content permanent; returns its key. The temporary file is gone after."""

    async def discard(self) -> None:
        """Forget the upload and remove its temporary file; safe to call twice or after a failure."""


class StorageBackend(Protocol):
    """What the files plugin needs from a place that keeps bytes."""

    async def start(self) -> None:
        """Get ready (folders, a connection, the bucket); ``StartupRefused`` when it cannot."""

    async def close(self) -> None:
        """Release connections; called once at shutdown."""

    def create(self) -> PendingObject:
        """Start a new object: a temporary local file to stream into (blocking: on a worker thread)."""

    def read(self, key: str, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """The bytes of a committed object from ``start`` (``length`` of them, or to the end), in
        chunks; raises ``FileNotFoundError`` before the first chunk when the object is gone."""

    async def delete(self, key: str) -> bool:
        """Remove an object; returns whether it existed. Never raises for a missing one."""

    async def exists(self, key: str) -> bool:
        """Whether a committed object is there. Raises (never answers False) when the store
        cannot be asked: a row is never taken for orphaned on a network error."""

    def keys(self, *, older_than: float = 0.0) -> AsyncIterator[str]:
        """Every committed key, optionally only those last written more than ``older_than``
        seconds ago (so a reconciliation never races an upload being committed)."""

    def stale_uploads(self, *, older_than: float) -> AsyncIterator[str]:
        """Leftovers of uploads abandoned by a crash, older than ``older_than`` seconds (names,
        for reporting)."""

    async def remove_stale_upload(self, name: str) -> bool:
        """Remove one of the ``stale_uploads``."""


class LocalDiskStorage:
    """Files on the local disk under ``root``: ``root/ab/cd/abcd….`` and ``root/.incoming``.
    Every file operation runs on ``run_blocking``'s threads."""

    def __init__(self, root: Path, run_blocking: RunBlocking) -> None:
        self.root = Path(root)
        self._run_blocking = run_blocking
        self.spool = Spool(self.root / INCOMING_DIR, run_blocking)

    def path_of(self, key: str) -> Path:
        """The path of ``key``; refuses anything that is not a key this backend made."""
        return self.root / check_key(key)

    async def start(self) -> None:
        await self._run_blocking(self.spool.prepare)

    async def close(self) -> None:
        pass

    def create(self) -> PendingObject:
        return self.spool.create(self._keep)

    async def _keep(self, path: Path, key: str) -> None:
        await self._run_blocking(self._move_in, path, self.path_of(key))

    @staticmethod
    def _move_in(path: Path, final: Path) -> None:
        # The row will say the file exists: make it so, even if it was rewritten since.
        with open(path, "rb") as written:
            os.fsync(written.fileno())
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, final)

    async def read(self, key: str, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        stream = await self._run_blocking(open, self.path_of(key), "rb")
        try:
            if start:
                await self._run_blocking(stream.seek, start)
            remaining = length
            while remaining is None or remaining > 0:
                wanted = READ_CHUNK_BYTES if remaining is None else min(READ_CHUNK_BYTES, remaining)
                chunk = await self._run_blocking(stream.read, wanted)
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            await self._run_blocking(stream.close)

    async def delete(self, key: str) -> bool:
        existed: bool = await self._run_blocking(self._unlink, self.path_of(key))
        return existed

    @staticmethod
    def _unlink(path: Path) -> bool:
        try:
            path.unlink()
            return True
        except FileNotFoundError:
            return False

    async def exists(self, key: str) -> bool:
        there: bool = await self._run_blocking(self.path_of(key).is_file)
        return there

    async def keys(self, *, older_than: float = 0.0) -> AsyncIterator[str]:
        for key in await self._run_blocking(self._list_keys, older_than):
            yield key

    def _list_keys(self, older_than: float) -> list[str]:
        cutoff = time.time() - older_than
        found = []
        for first in _hex_dirs(self.root):
            for second in _hex_dirs(first):
                for entry in os.scandir(second):
                    key = f"{first.name}/{second.name}/{entry.name}"
                    if KEY_PATTERN.match(key) and entry.is_file(follow_symlinks=False) \
                            and entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                        found.append(key)
        return found

    async def stale_uploads(self, *, older_than: float) -> AsyncIterator[str]:
        for name in await self._run_blocking(self.spool.stale, older_than):
            yield name

    async def remove_stale_upload(self, name: str) -> bool:
        removed: bool = await self._run_blocking(self.spool.remove, name)
        return removed


def _hex_dirs(parent: Path) -> list[Path]:
    if not parent.is_dir():
        return []
    return [Path(entry.path) for entry in os.scandir(parent)
            if len(entry.name) == 2 and all(c in "0123456789abcdef" for c in entry.name)
            and entry.is_dir(follow_symlinks=False)]


async def open_storage(app: App) -> StorageBackend:
    """Make and start this application's storage backend (at start-up, and by commands).
    ``StartupRefused`` when it cannot work (a missing bucket that cannot be created)."""
    settings = settings_of(app)
    if settings.storage == "local":
        backend: StorageBackend = LocalDiskStorage(settings.upload_path, app.run_blocking)
        if app.config.redis_url:
            log.warning("files are stored on this node's disk (FILES_STORAGE=local) while REDIS_URL says "
                        "several nodes may run: a file uploaded through one node is missing on the others; "
                        "set FILES_STORAGE=s3 to share them", extra={"uploadPath": str(settings.upload_path)})
    elif settings.storage == "s3":
        from .s3 import S3Storage

        if settings.s3 is None or not settings.s3.bucket:
            raise StartupRefused("files: FILES_STORAGE=s3 needs FILES_S3_BUCKET")
        backend = S3Storage(settings.s3, Spool(settings.upload_path / INCOMING_DIR, app.run_blocking),
                            app.run_blocking)
    else:
        # Another plugin's service: that plugin starts and stops it.
        try:
            backend = app.service(ServiceKey[StorageBackend](settings.storage))
        except LookupError as error:
            raise StartupRefused(f"files: FILES_STORAGE={settings.storage!r} is neither local, s3 nor a "
                                 f"published service ({error})") from None
        app.plugin_state(PLUGIN).storage = backend
        return backend
    try:
        await backend.start()
    except StartupRefused:
        raise
    except Exception as error:  # serving without storage would answer every file request 500
        raise StartupRefused(f"files: the {settings.storage} storage could not start: {error}") from error
    app.plugin_state(PLUGIN).storage = backend
    app.plugin_state(PLUGIN).owned_storage = backend
    return backend


async def close_storage(app: App) -> None:
    """Close the backend ``open_storage`` made (not another plugin's service)."""
    state = app.plugin_state(PLUGIN)
    backend = getattr(state, "owned_storage", None)
    state.owned_storage = state.storage = None
    if backend is not None:
        await backend.close()


def storage_of(app: App) -> StorageBackend:
    """This application's storage backend, opened at start-up."""
    backend: StorageBackend | None = getattr(app.plugin_state(PLUGIN), "storage", None)
    if backend is None:
        raise RuntimeError("the files storage is not open (open_storage runs at start-up)")
    return backend
