"""A test plugin that offers a hook and a service to other plugins (see ``listens``)."""

from vachat.plugin_api import ApiHandler, endpoint, hookimpl, hookspec

__version__ = "1.0"


class OffersHooks:
    @hookspec
    def offers_thing_happened(self, app, thing):
        """A thing happened; listeners may react. Returns are collected by ``app.hooks.offers_thing_happened(…)``."""

    @hookspec(firstresult=True)
    def offers_pick(self, app, choices):
        """The first listener that picks a choice wins."""


class Counter:
    """The service: other plugins count things through it."""

    def __init__(self) -> None:
        self.count = 0

    def bump(self, by: int = 1) -> int:
        self.count += by
        return self.count


class HappenHandler(ApiHandler):
    @endpoint("Make a thing happen and tell the listeners", auth=False)
    async def post(self):
        answers = await self.app.hooks.offers_thing_happened(thing="boom")
        picked = await self.app.hooks.offers_pick(choices=["a", "b"])
        self.respond({"answers": answers, "picked": picked})


@hookimpl
def vachat_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(OffersHooks)


@hookimpl
def vachat_services(app):
    return {"offers": Counter()}


@hookimpl
def vachat_routes(app):
    return [(r"/api/offers/happen", HappenHandler)]
