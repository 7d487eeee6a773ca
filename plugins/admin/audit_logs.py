"""``GET /api/admin/audit-logs``: the core's audit log, filtered and page-paginated, newest first."""

from __future__ import annotations

import datetime
from typing import Any

from vachat.plugin_api import ApiHandler, ValidationFailed, endpoint

from .paging import page_info

__all__ = ["AuditLogsHandler"]


def _moment(query: dict[str, Any], field: str) -> datetime.datetime | None:
    """The ``field`` bound as a naive UTC date-time (how rows are stored). The schema has
    checked the RFC 3339 form; Python reads it (with "Z" since 3.11), in upper case only (RFC
    3339 also allows "t" and "z"). A valid date-time can still fall off the calendar in UTC
    (``9999-12-31T23:59:59-23:59`` is in the year 10000): a 400 naming the field."""
    text = query.get(field)
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.upper())
        if moment.tzinfo is not None:
            moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise ValidationFailed("Invalid query parameters", details=[
            {"field": field, "message": "must be a date-time between years 1 and 9999 in UTC"}]) from None
    return moment


class AuditLogsHandler(ApiHandler):
    @endpoint("Audit log entries: filter by userId, action, from (inclusive), to (exclusive)",
              query="admin/audit-query", response="admin/audit-log-list", permission="audit.read",
              tags=("admin",))
    async def get(self) -> None:
        query = self.query
        since, until = _moment(query, "from"), _moment(query, "to")
        if since is not None and until is not None and since > until:
            raise ValidationFailed("Invalid query parameters", details=[
                {"field": "from", "message": "must not be after 'to'"}])
        entries, total = await self.app.accounts.query_audit(
            page=query["page"], limit=query["limit"], user_id=query.get("userId"), action=query.get("action"),
            since=since, until=until)
        self.respond(entries, pagination=page_info(query["page"], query["limit"], total))
