"""The files REST routes: ``/api/files/upload``, ``/api/files``, ``/api/files/:id``,
``/api/files/:id/download``.

Uploads stream (``StreamingBodyHandler``): the body cap is the file limit plus the multipart
overhead, raised only for a signed-in caller, and the ``UploadReceiver`` refuses as soon as the
bytes allow. ``on_finish`` and ``on_connection_close`` discard whatever an upload that did not
end in a stored file left behind.

Downloads are attachments whatever the type (``Content-Disposition: attachment``), with
``nosniff`` and a sandboxing CSP, so a stored file can never run as a page of this origin.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import peewee

from vachat.plugin_api import (
    ApiError, ApiHandler, App, NotFound, Route, StreamingBodyHandler, ValidationFailed, endpoint,
)

from .delivery import etag_matches, etag_of, requested_range, send_file
from .models import PURPOSE_DEFAULT, File
from .names import content_disposition
from .quota import bytes_used, over_quota, quota_message
from .service import SERVICE, FilesService
from .settings import settings_of
from .sniffing import ALLOWED_TYPES
from .storage import storage_of
from .upload import MULTIPART_OVERHEAD, UploadReceiver, form_flag, multipart_boundary

__all__ = ["routes", "UploadingHandler", "DOWNLOAD_CSP"]

#: A downloaded file is inert: no scripts, no plugins, no framing, sandboxed if opened anyway.
DOWNLOAD_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"
#: Downloads may be revalidated (ETag) but never stored by shared caches.
DOWNLOAD_CACHE_CONTROL = "private, no-cache"
#: Longest file description, in characters.
DESCRIPTION_MAX_CHARS = 1000
# Ids are 26 characters; anything much longer is not one, and need not reach the database.
_MAX_ID_CHARS = 64
_UPLOAD_PURPOSES = ("general", "attachment", "document", "media")
# Pending discards: kept referenced until done (a task nobody holds may be collected).
_cleanups: set[asyncio.Task[None]] = set()


def files_service(app: App) -> FilesService:
    return app.service(SERVICE)


def _check_id(file_id: str) -> str:
    if len(file_id) > _MAX_ID_CHARS:
        raise NotFound("File not found")
    return file_id


class UploadingHandler(StreamingBodyHandler):
    """Base of the upload routes: the multipart body streams into an ``UploadReceiver``."""

    receiver: UploadReceiver | None = None

    @property
    def upload(self) -> UploadReceiver:
        """The receiver ``prepare`` set up: every endpoint method, and every chunk, comes after it."""
        if self.receiver is None:
            raise RuntimeError("no upload is being received")
        return self.receiver
    #: The form fields besides ``file`` that this route accepts.
    form_fields: frozenset[str] = frozenset()
    allowed_types: frozenset[str] = ALLOWED_TYPES

    def file_limit(self) -> int:
        raise NotImplementedError

    async def prepare(self) -> None:
        await super().prepare()
        if self._finished:
            return
        boundary = multipart_boundary(self.request.headers.get("Content-Type"))
        quota = settings_of(self.app).user_quota
        left = quota - await self.app.db.run(bytes_used, self.caller.id)
        if left <= 0:
            raise over_quota(quota)
        self.receiver = UploadReceiver(
            self.app, storage_of(self.app), boundary, file_field="file", fields=self.form_fields,
            max_file_size=self.file_limit(), bytes_allowed=min(left, self.file_limit()),
            allowed_types=self.allowed_types, quota_message=quota_message(quota))

    def receive_chunk(self, chunk: bytes) -> Any:
        if self.receiver is None:
            return None
        return self._feed(chunk)

    async def _feed(self, chunk: bytes) -> None:
        try:
            await self.upload.feed(chunk)
        except ApiError as error:
            # Answer now (the connection closes after it, unread bytes and all), once the
            # partial file is gone.
            await self.upload.discard()
            if not self._finished:
                self.send_error(error.status, exc_info=(type(error), error, None))

    async def stored_or_discarded(self, work: Any) -> Any:
        """Await ``work`` (storing the upload); if it fails, the partial upload is removed
        before the error answer goes out."""
        try:
            return await work
        except BaseException:
            await self.upload.discard()
            raise

    def _discard(self) -> None:
        if self.receiver is not None:
            task = asyncio.ensure_future(self.upload.discard())
            _cleanups.add(task)
            task.add_done_callback(_cleanups.discard)

    def on_connection_close(self) -> None:
        self._discard()  # the client went away mid-upload
        super().on_connection_close()

    def on_finish(self) -> None:
        self._discard()  # a no-op once the file was kept
        super().on_finish()


class UploadHandler(UploadingHandler):
    form_fields = frozenset({"purpose", "isPublic", "description", "keepExif"})

    def file_limit(self) -> int:
        return settings_of(self.app).max_file_size

    @endpoint("Upload a file (multipart/form-data: file, purpose, isPublic, description, keepExif)",
              response="files/file", status=201, tags=("files",), errors=(400, 413, 415),
              description="The type is decided from the content against the allow-list (JPEG, PNG, GIF, "
                          "WebP, PDF, plain UTF-8 text, DOC, DOCX, MP3, WAV, OGG), never from the declared "
                          "type or name: anything else is 415. Over MAX_FILE_SIZE or the storage quota is "
                          "413 (PAYLOAD_TOO_LARGE), refused while the bytes arrive. Images lose their EXIF "
                          "and XMP (GPS positions) unless keepExif is true.")
    async def post(self) -> None:
        file = await self.stored_or_discarded(self._store())
        self.upload.keep()
        wire = file.to_wire()
        self.respond(wire, status=201, message="File uploaded")
        if self.app.hooks.implemented("files_uploaded"):
            await self.app.hooks.notify("files_uploaded", file=wire, actor=self.caller)

    async def _store(self) -> File:
        received = await self.upload.finish()
        fields = received.fields
        purpose = fields.get("purpose", PURPOSE_DEFAULT).strip() or PURPOSE_DEFAULT
        if purpose not in _UPLOAD_PURPOSES:
            raise ValidationFailed("Invalid purpose", details=[
                {"field": "purpose", "message": "must be one of " + ", ".join(_UPLOAD_PURPOSES)}])
        description = fields.get("description", "")
        if len(description) > DESCRIPTION_MAX_CHARS or "\x00" in description:
            raise ValidationFailed("Invalid description", details=[
                {"field": "description", "message": f"must be at most {DESCRIPTION_MAX_CHARS} characters, without NUL"}])
        return await files_service(self.app).store(
            self.caller.id, received, purpose=purpose, is_public=form_flag(fields, "isPublic"),
            description=description or None, keep_exif=form_flag(fields, "keepExif"))

_SORT_COLUMNS = {
    "createdAt": File.created_at, "size": File.size, "originalName": File.original_name,
    "downloadCount": File.download_count,
}


class FileListHandler(ApiHandler):
    @endpoint("List my files", query="files/list-query", response="files/file-list", tags=("files",))
    async def get(self) -> None:
        query, owner = self.query, self.caller.id
        column = _SORT_COLUMNS[query["sortBy"]]
        order = (column.asc(), File.id.asc()) if query["sortOrder"] == "asc" else (column.desc(), File.id.desc())
        page, limit = query["page"], query["limit"]

        def read() -> tuple[list[dict[str, Any]], int]:
            selection = File.select().where(File.owner_id == owner)
            if query.get("search"):
                selection = selection.where(peewee.fn.LOWER(File.original_name).contains(query["search"].lower()))
            if query.get("purpose"):
                selection = selection.where(File.purpose == query["purpose"])
            total = selection.count()
            rows = selection.order_by(*order).paginate(page, limit)
            return [row.to_wire() for row in rows], total

        files, total = await self.app.db.run(read)
        self.respond(files, pagination={"page": page, "limit": limit, "total": total,
                                        "totalPages": math.ceil(total / limit)})


class FileHandler(ApiHandler):
    @endpoint("A file's metadata", response="files/file", tags=("files",), errors=(404,))
    async def get(self, file_id: str) -> None:
        file = await files_service(self.app).readable(self.caller, _check_id(file_id))
        self.respond(file.to_wire())

    @endpoint("Delete a file", response="files/deleted", tags=("files",), errors=(403, 404),
              description="The owner, or a holder of files.access_all. The stored bytes go with the row.")
    async def delete(self, file_id: str) -> None:
        service = files_service(self.app)
        file = await service.owned(self.caller, _check_id(file_id))
        await service.delete(file)
        await self.app.accounts.audit("files.deleted", user_id=file.owner_id, actor_id=self.caller.id,
                                      request=self, details={"fileId": file.id})
        self.respond({"id": file.id}, message="File deleted")


class DownloadHandler(ApiHandler):
    @endpoint("Download a file", tags=("files",), errors=(304, 404, 416),
              description="Streams the bytes as an attachment with the content's type. Supports one "
                          "`Range` (206) and `If-None-Match` against the ETag (304). The download count "
                          "grows once per download that starts at byte 0.")
    async def get(self, file_id: str) -> None:
        file = await files_service(self.app).readable(self.caller, _check_id(file_id))
        await deliver(self, file, disposition=content_disposition(file.original_name),
                      cache_control=DOWNLOAD_CACHE_CONTROL, count=True)


async def deliver(handler: ApiHandler, file: File, *, disposition: str, cache_control: str, count: bool) -> None:
    """Answer with ``file``'s bytes: 304, 416, 206 or 200, headers included."""
    etag = etag_of(file.sha256)
    handler.set_header("ETag", etag)
    handler.set_header("Cache-Control", cache_control)
    handler.set_header("Content-Security-Policy", DOWNLOAD_CSP)
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Accept-Ranges", "bytes")
    if etag_matches(handler.request.headers.get("If-None-Match"), etag):
        handler.set_status(304)
        handler.finish()
        return
    byte_range = requested_range(handler.request.headers, file.size, etag)
    handler.set_header("Content-Type", file.mime_type)
    handler.set_header("Content-Disposition", disposition)
    if byte_range is None:
        handler.set_header("Content-Length", str(file.size))
    else:
        handler.set_status(206)
        handler.set_header("Content-Range", f"bytes {byte_range.start}-{byte_range.end}/{file.size}")
        handler.set_header("Content-Length", str(byte_range.length))
    if count and (byte_range is None or byte_range.start == 0):
        await files_service(handler.app).count_download(file.id)
    try:
        sent = await send_file(handler, storage_of(handler.app), file.stored_name, byte_range, file.size)
    except FileNotFoundError:
        if handler._headers_written:
            raise
        raise NotFound("The file's contents are missing") from None
    if sent:
        handler.finish()


def routes(app: App) -> list[Route]:
    upload_cap = settings_of(app).max_file_size + MULTIPART_OVERHEAD
    return [
        (r"/api/files/upload", UploadHandler, {"max_body_size": upload_cap}),
        (r"/api/files", FileListHandler),
        (r"/api/files/([^/]+)/download", DownloadHandler),
        (r"/api/files/([^/]+)", FileHandler),
    ]
