"""The benchmark's vachat plugin: fan-out through the real hub, with no auth logic of its own
and no persistence (the issue's first benchmark). Loaded with
``VACHAT_PLUGIN_MODULES=bench=bench.hub_plugin``.

``bench-join`` puts the socket in the room ``bench``; ``bench-broadcast`` publishes its data
to that room as ``bench-message``: JSON-encoded and framed once, written to every member.
"""

from vachat.plugin_api import hookimpl, ws_event

ROOM = "bench"


@ws_event("bench-join", summary="Join the benchmark room")
async def join(ctx, data):
    await ctx.join(ROOM)
    return {"room": ROOM}


@ws_event("bench-broadcast", summary="Broadcast data to the benchmark room")
async def broadcast(ctx, data):
    delivered = await ctx.publish(ROOM, "bench-message", data)
    return {"delivered": delivered}


@hookimpl
def vachat_ws_events(app):
    return [join, broadcast]
