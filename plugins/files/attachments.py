"""Files attached to chat messages, through the chat plugin's hooks and service (files imports
nothing of chat but the promise it publishes, ``plugins.chat.api``; every hook here is
optional, so files works without chat enabled).

- ``chat_message_before_store``: every id in a user's message ``files`` must be a file of that
  user, else the message is refused with 404 (the same answer as for an id that does not
  exist, so ids of other people's files cannot be probed).
- ``chat_messages_decorate``: each ``{"id"}`` in ``files`` becomes the file's metadata, for a
  whole batch of messages in one query. A file deleted since keeps its ``{"id"}`` alone.
- ``chat_message_deleted`` / ``chat_conversation_deleted`` release the files the deleted
  messages held: an ``attachment`` file (uploaded for a message) goes with the last message
  that holds it; files of other purposes stay in their owner's library. Which message holds
  which file is chat's fact (``chat_message_file``, written in the message's transaction);
  files asks ``ChatService.held_files`` rather than keeping a copy.
- Reading: whoever the chat service says may read a conversation a file is attached to may
  read and download the file.
"""

from __future__ import annotations

from typing import Any

from plugins.chat.api import CHAT
from vachat.plugin_api import Actor, App, NotFound

from .models import File
from .service import SERVICE

__all__ = ["check_message_files", "decorate_messages", "file_ids_of", "release", "PURPOSE_ATTACHMENT"]

#: Files uploaded for a message: they live as long as a message holds them.
PURPOSE_ATTACHMENT = "attachment"


async def check_message_files(app: App, message: dict[str, Any], actor: Actor) -> None:
    file_ids = [entry["id"] if isinstance(entry, dict) else entry for entry in message.get("files") or []]
    if not file_ids:
        return
    owner = actor.id
    owned = await app.db.run(lambda: {row.id for row in File.select(File.id).where(
        File.id.in_(file_ids), File.owner_id == owner)})
    missing = [index for index, file_id in enumerate(file_ids) if file_id not in owned]
    if missing:
        raise NotFound("File not found", details=[
            {"field": f"files.{index}", "message": "is not one of your files"} for index in missing])


def has_files(messages: list[dict[str, Any]]) -> bool:
    """Whether any of ``messages`` lists a file (``decorate_messages`` has work to do)."""
    return any(message.get("files") for message in messages)


async def decorate_messages(app: App, messages: list[dict[str, Any]]) -> None:
    wanted = {entry["id"] for message in messages for entry in message.get("files") or []
              if isinstance(entry, dict) and "id" in entry}
    if not wanted:
        return
    described = await app.service(SERVICE).describe(wanted)
    for message in messages:
        message["files"] = [described.get(entry["id"], entry) if isinstance(entry, dict) else entry
                            for entry in message.get("files") or []]


def file_ids_of(message: dict[str, Any]) -> list[str]:
    """The ids in a message's ``files`` (entries ``{"id", …}``), each once."""
    return list(dict.fromkeys(entry["id"] for entry in message.get("files") or [] if isinstance(entry, dict)))


async def release(app: App, file_ids: list[str]) -> int:
    """Delete the ``attachment`` files among ``file_ids`` that no live message holds any
    more (chat owns the message→file link and says which are still held). Returns how many
    files were deleted."""
    if not file_ids:
        return 0
    held = await app.service(CHAT).held_files(file_ids)
    candidates = [file_id for file_id in file_ids if file_id not in held]
    if not candidates:
        return 0
    released = await app.db.run(lambda: list(File.select().where(
        File.id.in_(candidates), File.purpose == PURPOSE_ATTACHMENT)))
    service = app.service(SERVICE)
    for file in released:
        await service.delete(file)
    return len(released)
