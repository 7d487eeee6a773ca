"""The files plugin's part of a user's data export: ``files/<id>/<original name>`` for every
file the user uploaded (avatars included), read from storage a chunk at a time when the
archive reaches it, and ``files.json`` describing them (the API's shape)."""

from __future__ import annotations

from typing import Any, AsyncIterator

from vachat.plugin_api import App, UserExport

from .models import File
from .storage import storage_of

__all__ = ["add_files"]

# Bytes read from storage at a time: large enough to keep the archive's thread busy, small
# enough that many exports at once stay light.
_CHUNK_BYTES = 256 * 1024


def _files_of(owner_id: str) -> list[File]:
    return list(File.select().where(File.owner_id == owner_id).order_by(File.created_at, File.id))


def _contents(app: App, key: str) -> Any:
    async def chunks() -> AsyncIterator[bytes]:
        storage = storage_of(app)
        stream = await app.run_blocking(storage.open, key)
        try:
            while chunk := await app.run_blocking(stream.read, _CHUNK_BYTES):
                yield chunk
        finally:
            await app.run_blocking(stream.close)

    return chunks


async def add_files(app: App, user_id: str, export: UserExport) -> None:
    files = await app.db.run(_files_of, user_id)
    export.add_json("files.json", [file.to_wire() for file in files])
    for file in files:
        export.add_stream(f"files/{file.id}/{file.original_name}", _contents(app, file.stored_name))
