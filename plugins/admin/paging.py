"""The ``pagination`` object of a page-paginated answer (``{page, limit, total, totalPages}``)."""

from __future__ import annotations

__all__ = ["page_info"]


def page_info(page: int, limit: int, total: int) -> dict[str, int]:
    return {"page": page, "limit": limit, "total": total, "totalPages": (total + limit - 1) // limit}
