"""A plugin the core's tests use to reach every class of request through the real server."""

from pathlib import Path

import peewee

from vachat.plugin_api import ApiHandler, NotFound, endpoint, hookimpl, ws_event

SCHEMAS_DIR = Path(__file__).parent / "sample_schemas"
__version__ = "1.2.3"


class WidgetsHandler(ApiHandler):
    @endpoint("List widgets", query="sample/widget-query", auth=False)
    async def get(self):
        self.respond({"query": self.query})

    @endpoint("Create a widget", body="sample/widget", status=201)
    async def post(self):
        self.respond({"widget": self.body, "by": self.actor.id}, status=201)


class WidgetHandler(ApiHandler):
    @endpoint("Read a widget", auth=False)
    async def get(self, widget_id):
        if widget_id != "known":
            raise NotFound("No such widget")
        self.respond({"id": widget_id})

    @endpoint("Delete a widget", permission="sample.delete")
    async def delete(self, widget_id):
        self.respond(None, message="deleted")


class FaultsHandler(ApiHandler):
    @endpoint("Fail on purpose", auth=False)
    async def get(self, kind):
        if kind == "crash":
            raise RuntimeError("boom: password=hunter2")
        if kind == "conflict":
            raise peewee.IntegrityError("UNIQUE constraint failed")
        self.respond({"kind": kind})


@ws_event("sample-echo", schema="sample/widget", summary="Echo a widget")
async def echo(ctx, data):
    return {"widget": data}


@hookimpl
def vachat_routes(app):
    return [
        (r"/api/sample/widgets", WidgetsHandler),
        (r"/api/sample/widgets/(?P<widget_id>[^/]+)", WidgetHandler),
        (r"/api/sample/faults/([a-z]+)", FaultsHandler),
    ]


@hookimpl
def vachat_ws_events(app):
    return [echo]


@hookimpl
def vachat_permissions():
    return [("sample.delete", "Delete widgets")]
