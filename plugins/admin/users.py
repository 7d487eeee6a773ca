"""``/api/admin/users`` and ``/api/admin/users/:id``: find, inspect, change and delete accounts.

Everything goes through the core's accounts service (``app.accounts``), which checks the
delegation rule (nobody changes their own role or tier, gives a role granting more than they
hold, or touches an account holding more: 403, audited) and the last-administrator rule in
the same transaction as the change (409 ``CONFLICT``), ends a
disabled user's sessions and sockets on every node before answering, runs
``vachat_user_deleting`` so every plugin removes a deleted user's data, and writes the audit
row with the acting administrator, address and user agent of this request.
"""

from __future__ import annotations

from typing import Any

from vachat.plugin_api import ApiHandler, NotFound, endpoint

from .paging import page_info

__all__ = ["UsersHandler", "UserHandler"]

# Field names on the wire → the accounts service's keyword arguments.
UPDATABLE_FIELDS = {"role": "role", "isActive": "is_active", "tier": "tier", "isEmailVerified": "is_email_verified"}


def _no_such_user(user_id: str) -> NotFound:
    return NotFound("No such user")


class UsersHandler(ApiHandler):
    @endpoint("List users: page pagination, search by name or e-mail, filter by role, active flag, tier",
              query="admin/user-list-query", response="admin/user-list", permission="users.read",
              tags=("admin",))
    async def get(self) -> None:
        query = self.query
        users, total = await self.app.accounts.list_users(
            page=query["page"], limit=query["limit"], search=query.get("search") or None,
            role=query.get("role"), active=query.get("isActive"), tier=query.get("tier"),
            sort_by=query["sortBy"], sort_order=query["sortOrder"])
        self.respond(users, pagination=page_info(query["page"], query["limit"], total))


class UserHandler(ApiHandler):
    @endpoint("One user", response="admin/user", permission="users.read", tags=("admin",), errors=(404,))
    async def get(self, user_id: str) -> None:
        user = await self.app.accounts.get_user(user_id)
        if user is None:
            raise _no_such_user(user_id)
        self.respond(user)

    @endpoint("Change a user's role, active flag, tier or verified flag", body="admin/user-update",
              response="admin/user", permission="users.update", tags=("admin",), errors=(404, 409),
              description="403 for your own role or tier, a role granting what you do not hold, or an "
                          "account holding permissions you do not have (audited).")
    async def put(self, user_id: str) -> None:
        changes: dict[str, Any] = {UPDATABLE_FIELDS[name]: value for name, value in self.body.items()}
        user = await self.app.accounts.update_user(user_id, actor_id=self.caller.id, request=self, **changes)
        if user is None:
            raise _no_such_user(user_id)
        self.respond(user)

    @endpoint("Delete a user and everything of theirs in every plugin", response="admin/user-deleted",
              permission="users.delete", tags=("admin",), errors=(404, 409),
              description="403 for an account holding permissions you do not have (audited).")
    async def delete(self, user_id: str) -> None:
        if not await self.app.accounts.delete_user(user_id, actor_id=self.caller.id, request=self):
            raise _no_such_user(user_id)
        self.respond({"id": user_id, "deleted": True}, message="User deleted")
