"""A test plugin whose route names a schema it does not ship (a forgotten package-data line)."""

from vachat.plugin_api import ApiHandler, endpoint, hookimpl

__version__ = "1.0"


class NotesHandler(ApiHandler):
    @endpoint("Create a note", body="missing_schema/note-create", status=201)
    async def post(self):
        self.respond(self.body, status=201)


@hookimpl
def vachat_routes(app):
    return [(r"/api/missing_schema/notes", NotesHandler)]
