"""What the files plugin promises other plugins: its service's ``Protocol`` and the key it is
published under (``app.service(FILES)``), and the ``Protocol`` a storage backend published by
another plugin keeps (``FILES_STORAGE_BACKEND`` names it).
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

from vachat.plugin_api import ServiceKey

__all__ = ["FilesService", "FILES"]


class FilesService(Protocol):
    """The files service, as other plugins may use it."""

    async def describe(self, file_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The files of these ids that exist, as the API shows them, by id."""
        ...

    async def totals(self) -> dict[str, int]:
        """``{count, bytes}`` of every stored file."""
        ...

    async def delete_all_of(self, owner_id: str) -> int:
        """Remove every file of ``owner_id``; how many. Idempotent."""
        ...


#: ``app.service(FILES)``: the files plugin's service, typed.
FILES: ServiceKey[FilesService] = ServiceKey("files")
