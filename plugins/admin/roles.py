"""``/api/admin/roles``, ``/api/admin/roles/:id`` and ``/api/admin/permissions``.

A role's permissions must be ones the core or a plugin declared (``app.permissions``) or
``*``; the accounts service checks that (400 naming each unknown one), that the caller grants
nothing it does not hold and leaves its own role alone (403, audited), refuses to take ``*``
from the last active administrators (409), makes holders see a change on their next request
and on open sockets, and audits it. Roles are not renamed or deleted here: users refer to them
by name.
"""

from __future__ import annotations

from vachat.plugin_api import ApiHandler, NotFound, endpoint

__all__ = ["RolesHandler", "RoleHandler", "PermissionsHandler", "SUPERUSER_DESCRIPTION"]

SUPERUSER_DESCRIPTION = "Every permission, present and future"


class RolesHandler(ApiHandler):
    @endpoint("List roles with their permissions and how many users hold each", response="admin/role-list",
              permission="roles.manage", tags=("admin",))
    async def get(self) -> None:
        self.respond(await self.app.accounts.list_roles())

    @endpoint("Create a role", body="admin/role-create", response="admin/role", permission="roles.manage",
              status=201, tags=("admin",), errors=(409,),
              description="403 for a permission you do not hold ('*' only by a holder of '*'; audited).")
    async def post(self) -> None:
        role = await self.app.accounts.create_role(
            self.body["name"], description=self.body.get("description", ""),
            permissions=self.body.get("permissions", []), actor_id=self.caller.id, request=self)
        self.respond(role, status=201)


class RoleHandler(ApiHandler):
    @endpoint("Change a role's description or permissions", body="admin/role-update", response="admin/role",
              permission="roles.manage", tags=("admin",), errors=(404, 409),
              description="403 for the permissions of your own role, of a role holding permissions you do "
                          "not have, or adding one you do not hold (audited).")
    async def put(self, role_id: str) -> None:
        role = await self.app.accounts.update_role(
            role_id, description=self.body.get("description"), permissions=self.body.get("permissions"),
            actor_id=self.caller.id, request=self)
        if role is None:
            raise NotFound("No such role")
        self.respond(role)


class PermissionsHandler(ApiHandler):
    @endpoint("Every permission the core and the plugins declare, with its description",
              response="admin/permission-list", permission="roles.manage", tags=("admin",))
    async def get(self) -> None:
        declared = sorted(self.app.permissions.items())
        self.respond([{"name": "*", "description": SUPERUSER_DESCRIPTION}]
                     + [{"name": name, "description": description} for name, description in declared])
