"""vachat-example-plugin: what a third-party plugin looks like, end to end.

It owns a model (``Note``) with its own migrations, a schemas folder (ids ``example/…``), a
config section (``[plugins.example]``, checked against ``schemas/config.json``), a permission,
REST routes under ``/api/example/``, WebSocket events, a metric, a health check, and hooks.
It imports only ``vachat.plugin_api``.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import peewee
from prometheus_client import CollectorRegistry, Counter

from vachat.plugin_api import (
    ApiHandler, App, BaseModel, EventContext, Forbidden, Permission, Route, hookimpl, endpoint, now, ws_event,
)

__version__ = "0.1.0"

log = logging.getLogger("vachat.plugins.example")

DEFAULT_GREETING = "Hello"
_state: dict[str, Any] = {}


class Note(BaseModel):
    owner_id = peewee.CharField(max_length=64, index=True)
    text = peewee.TextField()
    created_at = peewee.DateTimeField(default=now)

    class Meta:
        table_name = "example_note"

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "ownerId": self.owner_id, "createdAt": self.created_at}


def greeting(app: App) -> str:
    configured: str = app.plugin_config("example").get("greeting", DEFAULT_GREETING)
    return configured


class HelloHandler(ApiHandler):
    @endpoint("Greet the caller with the configured greeting", auth=False, tags=("example",))
    async def get(self) -> None:
        name = self.actor.name if self.actor else "stranger"
        self.respond({"greeting": f"{greeting(self.app)}, {name}!"})


class NotesHandler(ApiHandler):
    @endpoint("List my notes, newest first", response="example/note-list", tags=("example",))
    async def get(self) -> None:
        owner = self.caller.id
        notes = await self.app.db.run(
            lambda: [n.to_wire() for n in Note.select().where(Note.owner_id == owner).order_by(Note.id.desc())])
        self.respond(notes)

    @endpoint("Create a note and tell my other devices", body="example/note-create",
              response="example/note", permission="example.write", status=201, tags=("example",))
    async def post(self) -> None:
        note = await self.app.db.run(Note.create, owner_id=self.caller.id, text=self.body["text"])
        _state["created"].inc()
        await self.app.hub.publish(f"user:{self.caller.id}", "example-note-created", note.to_wire())
        self.respond(note.to_wire(), status=201)


@ws_event("example-echo", schema="example/echo", summary="Echo text back with the greeting")
async def echo(ctx: EventContext, data: dict[str, Any]) -> dict[str, Any]:
    return {"text": data["text"], "greeting": greeting(ctx.app)}


@ws_event("example-join", schema="example/room-message", summary="Join an example room")
async def join(ctx: EventContext, data: dict[str, Any]) -> dict[str, Any]:
    await ctx.join(f"example:{data['room']}")
    return {"room": data["room"]}


@ws_event("example-shout", schema="example/room-message", permission="example.write",
          summary="Broadcast text to everyone in an example room, on every node")
async def shout(ctx: EventContext, data: dict[str, Any]) -> dict[str, Any]:
    room = f"example:{data['room']}"
    if room not in ctx.rooms:
        raise Forbidden("Join the room first")
    await ctx.publish(room, "example-shouted", {"room": data["room"], "text": data.get("text", ""),
                                                "from": ctx.actor.id})
    return {"delivered": True}


@hookimpl
def vachat_routes(app: App) -> list[Route]:
    return [(r"/api/example/hello", HelloHandler), (r"/api/example/notes", NotesHandler)]


@hookimpl
def vachat_ws_events(app: App) -> list[Callable[..., Awaitable[Any]]]:
    return [echo, join, shout]


@hookimpl
def vachat_permissions() -> list[Permission]:
    # Every signed-up user may write notes: granted to the built-in ``user`` role once, when a
    # database first sees the permission (an operator's later revoke stays).
    return [Permission("example.write", "Create example notes and shout in example rooms", grant_to=("user",))]


@hookimpl
def vachat_metrics(registry: CollectorRegistry) -> None:
    _state["created"] = Counter("vachat_example_notes_created", "Notes created", registry=registry)


@hookimpl
def vachat_health_checks(app: App) -> dict[str, Callable[[], Awaitable[dict[str, Any]]]]:
    async def notes_table() -> dict[str, Any]:
        await app.db.run(lambda: Note.select().limit(1).count())
        return {"status": "ok"}

    return {"notes": notes_table}


@hookimpl
def vachat_startup(app: App) -> None:
    log.info("example plugin ready", extra={"greeting": greeting(app)})
