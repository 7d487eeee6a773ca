"""What the files plugin does with stored files, for its handlers, its hooks and other plugins
(published as the service ``"files"``).

Who may see a file: its owner; any signed-in user when it is public; a holder of
``files.access_all``; and — when the chat plugin is there — whoever may read a conversation
it is attached to. Everyone else gets 404, the same answer as for an id that does not exist,
so ids cannot be probed.

Every write keeps rows and stored objects in step: a row is inserted only after its object is
committed (and the object removed again if the insert fails), and a row is deleted before its
object, so the worst a crash leaves is an object without a row, which ``files reconcile``
removes.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Any, Iterable

import peewee

from vachat.plugin_api import Actor, App, Forbidden, NotFound, PayloadTooLarge, UnsupportedMediaType, database

from .attachments import readable_through_chat
from .images import NotAnImage, strip_metadata
from .models import PURPOSE_AVATAR, Attachment, File
from .settings import settings_of
from .sniffing import IMAGE_TYPES, confirm_structure
from .storage import PendingObject, storage_of
from .upload import Received

__all__ = ["FilesService", "ACCESS_ALL", "bytes_used", "quota_message"]

log = logging.getLogger("vachat.plugins.files")

#: The permission to read and delete anyone's files (moderators, support).
ACCESS_ALL = "files.access_all"
# Bytes read at a time when hashing a rewritten file.
_HASH_CHUNK = 1024 * 1024


def bytes_used(owner_id: str) -> int:
    """What ``owner_id`` stores now, in bytes (blocking: inside ``db.run``)."""
    return File.select(peewee.fn.COALESCE(peewee.fn.SUM(File.size), 0)).where(File.owner_id == owner_id).scalar() or 0


def quota_message(quota: int) -> str:
    return f"This upload would take you over your storage quota of {quota} bytes; delete some files first"


def _digest_of(pending: PendingObject) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(pending.path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class FilesService:
    def __init__(self, app: App) -> None:
        self._app = app

    @property
    def storage(self) -> Any:
        return storage_of(self._app)

    # -- storing ---------------------------------------------------------------------

    async def store(self, owner_id: str, received: Received, *, purpose: str, is_public: bool = False,
                    description: str | None = None, keep_exif: bool = False,
                    public_token: str | None = None) -> File:
        """Finish a received upload: strip image metadata (unless ``keep_exif``), check the
        structure, commit it and insert its row within the owner's quota. The pending object is
        the caller's to discard if this raises."""
        app = self._app
        size, sha256 = received.size, received.sha256
        if received.mime_type in IMAGE_TYPES and not keep_exif:
            try:
                changed = await app.run_blocking(strip_metadata, received.pending.path, received.mime_type)
            except NotAnImage:
                raise UnsupportedMediaType("The image could not be read") from None
            if changed:
                size, sha256 = await app.run_blocking(_digest_of, received.pending)
        if not await app.run_blocking(confirm_structure, received.pending.path, received.mime_type):
            raise UnsupportedMediaType("The file is damaged or not what its contents claim")
        key = await received.pending.commit()
        quota = settings_of(app).user_quota

        def insert() -> File:
            with database.atomic():
                if bytes_used(owner_id) + size > quota:
                    raise PayloadTooLarge(quota_message(quota), details=[{"field": "file", "message": "would exceed your storage quota"}])
                return File.create(owner_id=owner_id, original_name=received.original_name, stored_name=key,
                                   mime_type=received.mime_type, size=size, sha256=sha256, purpose=purpose,
                                   is_public=is_public, description=description, public_token=public_token)

        try:
            return await app.db.run(insert)
        except BaseException:
            await self._remove_objects([key])
            raise

    # -- reading ---------------------------------------------------------------------

    async def readable(self, actor: Actor, file_id: str) -> File:
        """The file if ``actor`` may read it, else ``NotFound``."""
        file = await self._app.db.run(File.get_or_none, File.id == file_id)
        if file is None or not await self.may_read(actor, file):
            raise NotFound("File not found")
        return file

    async def may_read(self, actor: Actor, file: File) -> bool:
        if file.owner_id == actor.id or file.is_public or actor.has(ACCESS_ALL):
            return True
        return await self._readable_through_chat(actor, file.id)

    async def _readable_through_chat(self, actor: Actor, file_id: str) -> bool:
        """Whether ``file_id`` is attached to a message in a conversation ``actor`` may read."""
        return await readable_through_chat(self._app, actor, file_id)

    async def owned(self, actor: Actor, file_id: str) -> File:
        """The file if ``actor`` may change it (owner or ``files.access_all``), else NotFound
        (or Forbidden when they may read but not change it)."""
        file = await self.readable(actor, file_id)
        if file.owner_id != actor.id and not actor.has(ACCESS_ALL):
            raise Forbidden("Only the owner may change this file")
        return file

    async def describe(self, file_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Wire objects of the files that exist among ``file_ids`` (one query)."""
        wanted = list(dict.fromkeys(file_ids))
        if not wanted:
            return {}
        rows = await self._app.db.run(lambda: list(File.select().where(File.id.in_(wanted))))
        return {row.id: row.to_wire() for row in rows}

    async def totals(self) -> dict[str, int]:
        """Every stored file: ``{"count", "bytes"}`` (one aggregate query)."""
        def read() -> dict[str, int]:
            count, size = File.select(peewee.fn.COUNT(File.id), peewee.fn.COALESCE(peewee.fn.SUM(File.size), 0)).scalar(as_tuple=True)
            return {"count": int(count or 0), "bytes": int(size or 0)}

        return await self._app.db.run(read)

    async def count_download(self, file_id: str) -> None:
        await self._app.db.run(lambda: File.update(download_count=File.download_count + 1)
                               .where(File.id == file_id).execute())

    # -- deleting --------------------------------------------------------------------

    async def delete(self, file: File) -> None:
        """Remove a file: its row, then its object (a failure there leaves an orphan object
        for ``files reconcile``, never a row without a file)."""
        def remove_row() -> int:
            with database.atomic():
                Attachment.delete().where(Attachment.file_id == file.id).execute()
                return File.delete().where(File.id == file.id).execute()

        deleted = await self._app.db.run(remove_row)
        if deleted:
            await self._remove_objects([file.stored_name])
            if file.purpose == PURPOSE_AVATAR:
                await self._app.accounts.set_avatar_url(file.owner_id, None)

    async def delete_all_of(self, owner_id: str) -> int:
        """Remove every file of ``owner_id`` (account deletion). Idempotent."""
        def take() -> list[str]:
            with database.atomic():
                rows = list(File.select(File.id, File.stored_name).where(File.owner_id == owner_id))
                Attachment.delete().where(Attachment.file_id.in_([row.id for row in rows])).execute()
                File.delete().where(File.owner_id == owner_id).execute()
                keys = [row.stored_name for row in rows]
            return keys

        keys = await self._app.db.run(take)
        await self._remove_objects(keys)
        return len(keys)

    async def _remove_objects(self, keys: list[str]) -> None:
        storage = self.storage
        for key in keys:
            try:
                await storage.delete(key)
            except Exception:  # left as an orphan without a row, for files reconcile
                log.warning("could not remove a stored file; files reconcile will", exc_info=True)


def new_public_token() -> str:
    """The random part of an avatar's public URL: 192 bits, URL-safe."""
    return secrets.token_urlsafe(24)

