"""Files attached to chat messages, through the chat plugin's hooks and service (files imports
nothing of chat but the promise it publishes, ``plugins.chat.api``; every hook here is
optional, so files works without chat enabled).

- ``chat_message_before_store``: every id in a user's message ``files`` must be a file of that
  user, else the message is refused with 404 (the same answer as for an id that does not
  exist, so ids of other people's files cannot be probed).
- ``chat_messages_decorate``: each ``{"id"}`` in ``files`` becomes the file's metadata, for a
  whole batch of messages in one query. A file deleted since keeps its ``{"id"}`` alone.
- ``chat_message_created``: remembers which message and conversation hold the file
  (``files_attachment``), so that
- ``chat_message_deleted`` / ``chat_conversation_deleted`` can release them: an ``attachment``
  file (uploaded for a message) goes with the last message that holds it; files of other
  purposes stay in their owner's library.
- Reading: whoever the chat service says may read a conversation a file is attached to may
  read and download the file.
"""

from __future__ import annotations

from typing import Any

from vachat.plugin_api import Actor, App, NotFound, database

from .models import Attachment, File
from .service import SERVICE

__all__ = ["check_message_files", "decorate_messages", "remember_attachments",
           "release_message", "release_conversation", "PURPOSE_ATTACHMENT"]

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


async def decorate_messages(app: App, messages: list[dict[str, Any]]) -> None:
    wanted = {entry["id"] for message in messages for entry in message.get("files") or []
              if isinstance(entry, dict) and "id" in entry}
    if not wanted:
        return
    described = await app.service(SERVICE).describe(wanted)
    for message in messages:
        message["files"] = [described.get(entry["id"], entry) if isinstance(entry, dict) else entry
                            for entry in message.get("files") or []]


async def remember_attachments(app: App, message: dict[str, Any]) -> None:
    file_ids = list(dict.fromkeys(entry["id"] for entry in message.get("files") or [] if isinstance(entry, dict)))
    if not file_ids:
        return
    rows = [{"file_id": file_id, "message_id": message["id"], "conversation_id": message["conversationId"]}
            for file_id in file_ids]
    await app.db.run(lambda: Attachment.insert_many(rows).on_conflict_ignore().execute())


async def release_message(app: App, message_id: str) -> int:
    return await _release(app, Attachment.message_id == message_id)


async def release_conversation(app: App, conversation_id: str) -> int:
    return await _release(app, Attachment.conversation_id == conversation_id)


async def _release(app: App, condition: Any) -> int:
    """Forget the attachments matching ``condition``; delete the ``attachment`` files no
    message holds any more. Returns how many files were deleted."""
    def forget() -> list[File]:
        with database.atomic():
            file_ids = [row.file_id for row in Attachment.select(Attachment.file_id).where(condition)]
            Attachment.delete().where(condition).execute()
            if not file_ids:
                return []
            still_held = {row.file_id for row in Attachment.select(Attachment.file_id).where(Attachment.file_id.in_(file_ids))}
            return list(File.select().where(File.id.in_([f for f in file_ids if f not in still_held]),
                                            File.purpose == PURPOSE_ATTACHMENT))

    released = await app.db.run(forget)
    service = app.service(SERVICE)
    for file in released:
        await service.delete(file)
    return len(released)
