"""A plugin with a request that stays in flight until the server starts shutting down, so a
test can prove SIGTERM lets it finish."""

import asyncio

from vachat.plugin_api import ApiHandler, endpoint, hookimpl

# How long the slow request keeps working after shutdown begins (s): long enough that the
# server must really wait for it, far below the shutdown grace period.
WORK_AFTER_SHUTDOWN = 0.5
_state = {"waiting": 0}


class SlowHandler(ApiHandler):
    @endpoint("Finish only after shutdown has begun", auth=False)
    async def get(self):
        _state["waiting"] += 1
        while not self.application.shutting_down:
            await asyncio.sleep(0.01)
        await asyncio.sleep(WORK_AFTER_SHUTDOWN)
        self.respond({"finished": True})


class StatusHandler(ApiHandler):
    @endpoint("How many slow requests are waiting", auth=False)
    async def get(self):
        self.respond({"waiting": _state["waiting"]})


@hookimpl
def vachat_routes(app):
    return [(r"/api/slow/wait", SlowHandler), (r"/api/slow/status", StatusHandler)]
