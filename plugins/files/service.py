"""What the files plugin does with stored files, for its handlers, its hooks and other plugins
(published as the service ``"files"``).

Who may see a file: its owner; any signed-in user when it is public; a holder of
``files.access_all``; and — when the chat plugin is there — whoever may read a conversation
it is attached to. Everyone else gets 404, the same answer as for an id that does not exist,
so ids cannot be probed.

Quota: an upload reserves its size before the work and its row replaces the reservation
(``quota``), so concurrent uploads cannot pass the quota together.

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

from plugins.chat.api import CHAT
from vachat.plugin_api import Actor, App, Forbidden, NotFound, ServiceKey, UnsupportedMediaType, database

from .api import FILES
from .images import NotAnImage, decode, strip_metadata
from .models import PURPOSE_AVATAR, File
from .quota import release, reserve, settle
from .settings import settings_of
from .sniffing import IMAGE_TYPES, confirm_structure
from .storage import PendingObject, StorageBackend, storage_of
from .upload import Received

__all__ = ["FilesService", "ACCESS_ALL"]

log = logging.getLogger("vachat.plugins.files")

#: The permission to read and delete anyone's files (moderators, support).
ACCESS_ALL = "files.access_all"
# Bytes read at a time when hashing a rewritten file.
_HASH_CHUNK = 1024 * 1024


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
    def storage(self) -> StorageBackend:
        return storage_of(self._app)

    # -- storing ---------------------------------------------------------------------

    async def store(self, owner_id: str, received: Received, *, purpose: str, is_public: bool = False,
                    description: str | None = None, keep_exif: bool = False,
                    public_token: str | None = None) -> File:
        """Finish a received upload within the owner's quota: reserve its size, re-encode a
        picture from its pixels alone (unless ``keep_exif``), check the structure, commit it and insert its row in
        place of the reservation. A failure gives the reservation back; the pending object is
        the caller's to discard if this raises."""
        app = self._app
        quota = settings_of(app).user_quota
        reservation = await app.db.run(reserve, owner_id, received.size, quota)
        key: str | None = None
        try:
            size, sha256 = received.size, received.sha256
            if received.mime_type in IMAGE_TYPES and not keep_exif:
                try:
                    changed = await decode(app, strip_metadata, received.pending.path, received.mime_type)
                except NotAnImage:
                    raise UnsupportedMediaType("The image could not be read") from None
                if changed:
                    size, sha256 = await app.run_blocking(_digest_of, received.pending)
            if not await app.run_blocking(confirm_structure, received.pending.path, received.mime_type):
                raise UnsupportedMediaType("The file is damaged or not what its contents claim")
            key = await received.pending.commit()

            def create() -> File:
                created: File = File.create(owner_id=owner_id, original_name=received.original_name, stored_name=key,
                                   mime_type=received.mime_type, size=size, sha256=sha256, purpose=purpose,
                                   is_public=is_public, description=description, public_token=public_token)
                return created

            return await app.db.run(settle, reservation, owner_id, size, quota, create)
        except BaseException:
            await app.db.run(release, reservation)
            if key is not None:
                await self._remove_objects([key])
            raise

    # -- reading ---------------------------------------------------------------------

    async def readable(self, actor: Actor, file_id: str) -> File:
        """The file if ``actor`` may read it, else ``NotFound``."""
        file: File | None = await self._app.db.run(File.get_or_none, File.id == file_id)
        if file is None or not await self.may_read(actor, file):
            raise NotFound("File not found")
        return file

    async def may_read(self, actor: Actor, file: File) -> bool:
        if file.owner_id == actor.id or file.is_public or actor.has(ACCESS_ALL):
            return True
        return await self._readable_through_chat(actor, file.id)

    async def _readable_through_chat(self, actor: Actor, file_id: str) -> bool:
        """Whether ``file_id`` is attached to a message in a conversation ``actor`` may read
        (never without the chat plugin)."""
        if not self._app.has_service(CHAT):
            return False
        return await self._app.service(CHAT).can_read_file(actor, file_id)

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
            removed: int = File.delete().where(File.id == file.id).execute()
            return removed

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


#: The files plugin's own key to its service, typed as the whole class (other plugins use
#: ``api.FILES``, typed as the ``Protocol`` they may rely on).
SERVICE: ServiceKey[FilesService] = ServiceKey(FILES.name)
