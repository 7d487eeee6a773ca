"""The files plugin's part of a user's data export: ``files/<id>/<original name>`` for every
file the user uploaded (avatars included), read from storage a chunk at a time when the
archive reaches it, and ``files.json`` describing them (the API's shape)."""

from __future__ import annotations

from typing import Any, AsyncIterator

from vachat.plugin_api import App, UserExport

from .models import File
from .storage import storage_of

__all__ = ["add_files"]


def _files_of(owner_id: str) -> list[File]:
    return list(File.select().where(File.owner_id == owner_id).order_by(File.created_at, File.id))


def _contents(app: App, key: str) -> Any:
    def chunks() -> AsyncIterator[bytes]:
        return storage_of(app).read(key)  # READ_CHUNK_BYTES at a time, from disk or bucket

    return chunks


async def add_files(app: App, user_id: str, export: UserExport) -> None:
    files = await app.db.run(_files_of, user_id)
    export.add_json("files.json", [file.to_wire() for file in files])
    for file in files:
        export.add_stream(f"files/{file.id}/{file.original_name}", _contents(app, file.stored_name))
