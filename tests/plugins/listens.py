"""A test plugin that needs ``offers``: implements its hooks and uses its service."""

from vachat.plugin_api import ApiHandler, endpoint, hookimpl

__version__ = "1.0"
REQUIRES = ("offers",)


class BumpHandler(ApiHandler):
    @endpoint("Count through the offers service", auth=False)
    async def post(self):
        self.respond({"count": self.app.service("offers").bump(2)})


@hookimpl
def offers_thing_happened(app, thing):
    return f"heard {thing}"


@hookimpl
def offers_pick(choices):
    return choices[-1]


@hookimpl(optionalhook=True)
def ghost_appeared(app):
    """The ``ghost`` plugin is not installed: an optional implementation is fine."""


@hookimpl
def vachat_routes(app):
    return [(r"/api/listens/bump", BumpHandler)]
