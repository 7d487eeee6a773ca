"""A plugin the chat tests load beside chat: it implements every hook chat offers, the way
the files and AI plugins will, and records what it was told."""

from __future__ import annotations

from typing import Any

from vachat.plugin_api import QuotaExceeded, hookimpl

__version__ = "1.0"
REQUIRES = ("chat",)

calls: list[tuple[str, Any]] = []
generations: dict[str, dict[str, Any]] = {}
during_join: list[Any] = []


def reset() -> None:
    calls.clear()
    generations.clear()
    during_join.clear()


@hookimpl
def chat_message_before_store(app, conversation, message, actor):
    calls.append(("before_store", message))
    calls.append(("before_store_conversation", conversation))
    if "over quota" in message["content"]:
        raise QuotaExceeded("Daily AI tokens used up")


@hookimpl
def chat_messages_decorate(app, messages):
    calls.append(("decorate", len(messages)))
    for message in messages:
        for file in message["files"]:
            file["name"] = f"{file['id']}.txt"


@hookimpl
def chat_message_created(app, conversation, message, actor):
    calls.append(("created", (conversation["id"], message["id"], getattr(actor, "id", None))))


@hookimpl
def chat_message_updated(app, conversation, message, actor):
    calls.append(("updated", message["content"]))


@hookimpl
def chat_message_deleted(app, conversation, message, actor):
    calls.append(("deleted", (message["id"], [f["id"] for f in message["files"]])))


@hookimpl
def chat_conversation_deleted(app, conversation, actor):
    calls.append(("conversation_deleted", conversation["id"]))


@hookimpl
async def chat_ai_reply_requested(app, conversation, message, actor):
    chat = app.service("chat")
    context = await chat.history(conversation["id"], budget=1000)
    calls.append(("ai_requested", [m["content"] for m in context]))
    await chat.store_assistant_message(conversation["id"], f"echo: {message['content']}",
                                       metadata={"model": "test"})


@hookimpl
async def chat_generation_status(app, conversation_id):
    if during_join:  # a test's step run while a join is under way (after its replay)
        await during_join.pop()(app, conversation_id)
    return generations.get(conversation_id)
