"""A user leaving, or taking their data: ``DELETE /api/users/me`` and ``GET /api/users/me/export``.

- ``DELETE /api/users/me`` with ``{"password"}`` deletes the signed-in account and everything it
  owns in every plugin (the same path as an administrator's deletion: ``vachat_user_deleting``
  in each plugin, then the account's rows). A wrong password is 400 on ``password``, like
  change-password's, and attempts are limited per user at ``RATE_LIMIT_AUTH``. An API key may
  not do it (403): deleting a person's account takes the person's password, and a session.
  The last active administrator cannot delete themself (409). Sockets close with 4401; the
  audit log keeps the fact (``user.deleted``), not the data.
- ``GET /api/users/me/export`` answers ``application/zip``: ``profile.json`` from the core, and
  whatever each plugin adds through ``vachat_user_exporting`` (conversations, files, webhooks).
  The archive streams as it is made (``vachat.exports``). At most ``RATE_LIMIT_EXPORT`` exports
  per user (429 with ``Retry-After`` past it).

Never run bcrypt or Peewee on the IOLoop here, and never put a secret (password hash, key hash,
signing secret) in an export.
"""

from __future__ import annotations

import datetime
from typing import Any

from tornado.iostream import StreamClosedError

from ..errors import RateLimited, Unauthorized
from ..exports import UserExport
from ..web import ApiHandler, endpoint
from .audit import USER_DELETION_FAILED, USER_EXPORTED, audit
from .models import User, UserPreferences
from .profile import confirmed_by_password, profile_of

__all__ = ["ROUTES", "DeleteMeHandler", "ExportHandler"]


def _profile_document(user_id: str) -> dict[str, Any] | None:
    user = User.get_or_none(User.id == user_id)
    if user is None:
        return None
    return profile_of(user, UserPreferences.get_or_none(UserPreferences.user == user_id))


def _export_filename(moment: datetime.datetime) -> str:
    return f"vachat-export-{moment.strftime('%Y%m%dT%H%M%SZ')}.zip"


class DeleteMeHandler(ApiHandler):
    @endpoint("Delete my account and everything it owns", body="core/users/delete-me", tags=("users",),
              errors=(400, 403, 409, 429),
              description="Needs the account's password (a wrong one is 400 on `password`). Every "
                          "plugin removes what the account owns (conversations, messages, files, "
                          "usage, webhooks, sessions, keys); open sockets close with 4401. The last "
                          "administrator cannot delete themself (409). An API key cannot (403).")
    async def delete(self) -> None:
        user = await confirmed_by_password(self, self.body["password"], field="password", purpose="delete-account",
                                           refused=USER_DELETION_FAILED)
        await self.application.accounts.delete_user(user.id, actor_id=user.id, request=self)
        self.respond(None, message="Your account and everything it held were deleted")


class ExportHandler(ApiHandler):
    @endpoint("Download a copy of my data", tags=("users",), errors=(429,),
              description="A ZIP archive, streamed: `profile.json`, `conversations.json` (every "
                          "conversation with all its messages, branches included), `files/<id>/<name>` "
                          "for each uploaded file, `webhooks.json` (without secrets), and whatever "
                          "other plugins add. At most `RATE_LIMIT_EXPORT` exports per user.")
    async def get(self) -> None:
        app = self.application
        decision = await app.limiter.hit(f"export:user:{self.actor.id}", app.config.rate_limit_export)
        if not decision.allowed:
            raise RateLimited("Too many exports; try again later", retry_after=decision.retry_after)
        profile = await app.db.run(_profile_document, self.actor.id)
        if profile is None:
            raise Unauthorized()
        export = UserExport(self.actor.id)
        export.add_json("profile.json", profile)
        await app.hooks.call("vachat_user_exporting", user_id=self.actor.id, export=export)
        await audit(app, self, USER_EXPORTED, user_id=self.actor.id, details={"entries": len(export.names)})
        moment = datetime.datetime.now(datetime.timezone.utc)
        self.set_header("Content-Type", "application/zip")
        self.set_header("Content-Disposition", f'attachment; filename="{_export_filename(moment)}"')
        self.set_header("Cache-Control", "private, no-store")
        chunks = export.zip_chunks()
        try:
            async for chunk in chunks:
                self.write(chunk)
                await self.flush()  # back-pressure: the next chunk waits for this one to go out
        except StreamClosedError:
            return  # the client went away: stop reading the sources
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        self.finish()


ROUTES: list[tuple[str, type]] = [
    (r"/api/users/me", DeleteMeHandler),
    (r"/api/users/me/export", ExportHandler),
]
