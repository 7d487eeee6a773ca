"""Avatars: ``POST /api/users/avatar`` (this plugin adds the route under the core's
``/api/users``) and ``GET /api/files/avatars/<token>.png``, served without authentication.

The upload must sniff as an image (JPEG, PNG, GIF, WebP) within ``max_avatar_size`` and
announce at most ``max_avatar_pixels`` (else 415, before anything is decoded). It is never
stored as sent: the pixels are decoded (one picture at a time per node), oriented, scaled to at most 512 pixels and
re-encoded as a PNG, so no EXIF, no trailing payload and no second frame survive. The avatar is
a file of purpose ``avatar`` (it counts toward the quota) with a random public token; the
user's ``avatarUrl`` points at it, and the previous avatar, row and bytes, is removed.

The public URL carries 192 random bits: it can be shared in an ``<img>`` and cannot be guessed.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import Any

from vachat.plugin_api import ApiHandler, App, NotFound, Route, UnsupportedMediaType, endpoint

from .handlers import UploadingHandler, deliver, files_service
from .images import NotAnImage, decode, make_avatar
from .models import PURPOSE_AVATAR, File
from .names import content_disposition
from .service import new_public_token
from .settings import settings_of
from .sniffing import IMAGE_TYPES
from .storage import storage_of
from .upload import MULTIPART_OVERHEAD, Received

__all__ = ["routes"]

#: Avatars are public and replaced under a new URL: caches may keep one for a day.
AVATAR_CACHE_CONTROL = "public, max-age=86400"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32}$")


def _avatar_bytes(source: Any, max_pixels: int) -> bytes:
    out = io.BytesIO()
    make_avatar(source, out, max_pixels)
    return out.getvalue()


class AvatarUploadHandler(UploadingHandler):
    allowed_types = IMAGE_TYPES

    def file_limit(self) -> int:
        return settings_of(self.app).max_avatar_size

    async def _avatar_png(self) -> bytes:
        upload = await self.upload.finish()
        try:
            return await decode(self.app, _avatar_bytes, upload.pending.path, settings_of(self.app).max_avatar_pixels)
        except NotAnImage:
            raise UnsupportedMediaType("The image could not be read") from None

    @endpoint("Set my avatar (multipart/form-data: file)", response="files/avatar", status=201,
              tags=("users", "files"), errors=(400, 413, 415),
              description="JPEG, PNG, GIF or WebP up to MAX_AVATAR_SIZE and MAX_AVATAR_PIXELS, re-encoded as a PNG of at most "
                          "512 pixels without metadata. The previous avatar is deleted; `avatarUrl` needs "
                          "no credentials.")
    async def post(self) -> None:
        app, owner = self.app, self.caller.id
        png = await self.stored_or_discarded(self._avatar_png())
        await self.upload.discard()  # the upload as sent is never kept
        storage = storage_of(app)
        pending = await app.run_blocking(storage.create)
        try:
            await app.run_blocking(pending.write, png)
            await app.run_blocking(pending.close)
            avatar = Received(pending, "avatar.png", "image/png", len(png), hashlib.sha256(png).hexdigest())
            service = files_service(app)
            file = await service.store(owner, avatar, purpose=PURPOSE_AVATAR, keep_exif=True,
                                       public_token=new_public_token())
        except BaseException:
            await pending.discard()
            raise
        previous = await app.db.run(lambda: list(File.select().where(
            (File.owner_id == owner) & (File.purpose == PURPOSE_AVATAR) & (File.id != file.id))))
        for old in previous:
            await service.delete(old)
        await app.accounts.set_avatar_url(owner, file.url)
        self.respond({"avatarUrl": file.url, "file": file.to_wire()}, status=201, message="Avatar updated")


class AvatarFileHandler(ApiHandler):
    @endpoint("An avatar image (public: the URL is the secret)", auth=False, tags=("files",), errors=(404,))
    async def get(self, token: str) -> None:
        if not _TOKEN.match(token):
            raise NotFound("No such avatar")
        file = await self.app.db.run(File.get_or_none, (File.public_token == token) & (File.purpose == PURPOSE_AVATAR))
        if file is None:
            raise NotFound("No such avatar")
        self.set_header("Cross-Origin-Resource-Policy", "cross-origin")  # an <img> on the app's own origin
        await deliver(self, file, disposition=content_disposition("avatar.png", inline=True),
                      cache_control=AVATAR_CACHE_CONTROL, count=False)


def routes(app: App) -> list[Route]:
    cap = settings_of(app).max_avatar_size + MULTIPART_OVERHEAD
    return [
        (r"/api/users/avatar", AvatarUploadHandler, {"max_body_size": cap}),
        (r"/api/files/avatars/([^/]+)\.png", AvatarFileHandler),
    ]
