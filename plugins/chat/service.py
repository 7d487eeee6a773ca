"""The chat service: every read and write of conversations and messages, in one place.

REST handlers, WebSocket events and other plugins (through ``app.service("chat")``) all go
through ``ChatService``, so a REST write and a socket write store the same rows, run the same
hooks and broadcast the same events. Each public method is a coroutine for the IOLoop; the
queries run on database threads (``app.db.run``), one transaction per write, and the events
go out after the commit (``app.hub.publish`` encodes and frames each once).

Access: the owner has full access; a public conversation is readable by any
signed-in user; a holder of ``conversations.read_all`` reads any. A conversation the caller
may not read is "not found" (404): its existence is not leaked. Writing to one the caller may
read but does not own is 403. ``actor=None`` means a trusted caller (another plugin acting for
the system, e.g. the AI storing its reply): no access check.

This module must never run a query on the IOLoop, broadcast before the commit, or hand a
caller a message of a conversation it may not read.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from vachat.plugin_api import Actor, ApiError, App, Conflict, Forbidden, NotFound, ServiceKey, ValidationFailed, database, now

from . import counters, listing, rooms, search
from .api import ACTS_ON, CHAT
from .batcher import Batcher
from .models import Conversation, Message, MessageFile
from .rooms import conversation_room
from .store import (
    READ_ALL, conversation_of_message, conversations_wire, insert_message, insert_user_messages, load_conversation,
    locked, look_before_store, messages_wire, next_seq, readable, set_tags,
)
from .wire import Draft, check_metadata, conversation_wire, deleted_frame, message_wire

__all__ = ["ChatService", "SERVICE", "READ_ALL", "conversation_room", "user_room", "MAX_REPLAY"]

# A join replays at most this many missed messages; the rest are paged over REST.
MAX_REPLAY = 200
# Deleted ids a join reports at most; past it ``hasMore`` tells the client to reload.
MAX_REPLAY_DELETED = 1000
# Messages read per step while walking a branch back from its leaf for ``history``.
HISTORY_STEP = 200
DEFAULT_TITLE = "New conversation"
# Send batches in flight at once on PostgreSQL (see ``Batcher``), each on its own database
# thread and connection (the pool holds 8 by default).
SENDS_IN_FLIGHT_POSTGRES = 2


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


class ChatService:
    """Published as ``app.service(CHAT)`` (``api.ChatService`` is what others may use of it);
    see the module docstring."""

    def __init__(self, app: App) -> None:
        self.app = app
        # PostgreSQL: while one batch waits for its commit to be flushed, the next does its work
        # (concurrent transactions, each locking its conversations in id order). SQLite writes
        # one transaction at a time: a second batch in flight would only queue on its lock.
        in_flight = SENDS_IN_FLIGHT_POSTGRES if app.db.is_postgres else 1
        by_conversation = lambda send: send[0].conversation_id  # noqa: E731
        self.sends = Batcher(app, insert_user_messages, in_flight=in_flight, key=by_conversation)
        self.looks = Batcher(app, look_before_store, in_flight=in_flight, key=by_conversation)
        # Conversation list pages read, kept under the owner's list version (see listing).
        self.list_pages = listing.ListCache(int(app.plugin_config("chat")["list_cache_bytes"]))

    def room_of(self, conversation_id: str) -> str:
        return conversation_room(conversation_id)

    # -- conversations ------------------------------------------------------------------

    async def get_conversation(self, conversation_id: str) -> dict[str, Any] | None:
        """A conversation as the API shows it, or None (no access check)."""

        def read() -> dict[str, Any] | None:
            conversation = Conversation.get_or_none(Conversation.id == conversation_id)
            return conversations_wire([conversation])[0] if conversation else None

        found = await self.app.db.run(read)
        if found and found["lastMessage"]:
            await self._decorate([found["lastMessage"]])
        return found

    async def read_conversation(self, actor: Actor, conversation_id: str) -> dict[str, Any]:
        """A conversation ``actor`` may read, with its tags and last message; else ``NotFound``."""

        def read() -> dict[str, Any]:
            return conversations_wire([load_conversation(conversation_id, actor)])[0]

        found = await self.app.db.run(read)
        await self._decorate_last([found])
        return found

    async def check_access(self, actor: Actor | None, conversation_id: str, write: bool = False) -> dict[str, Any]:
        """The conversation if ``actor`` may read it (``write``: change it); else ``NotFound``
        (it may not read it) or ``Forbidden`` (it may read but not change it)."""

        def read() -> dict[str, Any]:
            conversation = load_conversation(conversation_id, actor, write)
            return conversation_wire(conversation, listing.tags_of([conversation.id])[conversation.id])

        return await self.app.db.run(read)

    async def readable_among(self, questions: list[tuple[Actor, list[str]]]) -> list[set[str]]:
        """For each ``(actor, conversation ids)``, the ids that actor may read, in one query
        (for sockets whose permissions changed: ``rooms.recheck``)."""
        wanted = list({cid for _, ids in questions for cid in ids})

        def read() -> list[set[str]]:
            found = {c.id: c for c in Conversation.select().where(Conversation.id.in_(wanted))}
            answers = []
            for actor, ids in questions:
                allowed = set()
                for cid in ids:
                    try:
                        allowed.add(readable(found.get(cid), actor, write=False).id)
                    except NotFound:
                        pass
                answers.append(allowed)
            return answers

        return await self.app.db.run(read) if wanted else [set() for _ in questions]

    async def _before_conversation_store(self, actor: Actor, body: dict[str, Any], conversation_id: str | None) -> None:
        """The checks of a conversation's new fields: the metadata's size, then other
        plugins' (``chat_conversation_before_store``), before anything is written."""
        check_metadata(body)
        if self.app.hooks.implemented("chat_conversation_before_store"):
            await self.app.hooks.call("chat_conversation_before_store", changes=body, actor=actor,
                                      conversation_id=conversation_id)

    async def create_conversation(self, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
        await self._before_conversation_store(actor, body, None)

        def create() -> dict[str, Any]:
            with database.atomic():
                conversation = Conversation.create(
                    owner_id=actor.id, title=body.get("title") or DEFAULT_TITLE,
                    description=body.get("description", ""), is_public=body.get("isPublic", False),
                    is_archived=body.get("isArchived", False), metadata=body.get("metadata") or {})
                set_tags(conversation, body.get("tags") or [])
                counters.count_conversation(conversation.id, conversation.created_at)
            return conversations_wire([conversation])[0]

        created = await self.app.db.run(create)
        await self.app.publish(user_room(actor.id), "conversation-created", created)
        if self.app.hooks.implemented("chat_conversation_created"):
            await self.app.hooks.notify("chat_conversation_created", conversation=created, actor=actor)
        return created

    async def update_conversation(self, actor: Actor, conversation_id: str, body: dict[str, Any]) -> dict[str, Any]:
        await self._before_conversation_store(actor, body, conversation_id)
        fields = {"title": Conversation.title, "description": Conversation.description,
                  "isPublic": Conversation.is_public, "isArchived": Conversation.is_archived,
                  "metadata": Conversation.metadata}

        def update() -> tuple[bool, dict[str, Any]]:
            with database.atomic():
                conversation = load_conversation(conversation_id, actor, write=True, lock=True)
                changes: dict[Any, Any] = {column: body[name] for name, column in fields.items() if name in body}
                current = body.get("currentMessageId")
                if current is not None:
                    if not Message.select().where(Message.id == current, Message.conversation == conversation.id,
                                                  Message.deleted_at.is_null()).exists():
                        raise ValidationFailed("currentMessageId names no message of this conversation", details=[
                            {"field": "currentMessageId", "message": "is not a message of this conversation"}])
                    changes[Conversation.current_message_id] = current
                changes[Conversation.updated_at] = now()
                Conversation.update(changes).where(Conversation.id == conversation.id).execute()
                if "tags" in body:
                    set_tags(conversation, body["tags"])
            return conversation.is_public, conversations_wire([Conversation.get_by_id(conversation_id)])[0]

        was_public, updated = await self.app.db.run(update)
        if was_public and not updated["isPublic"]:
            await rooms.made_private(self.app, conversation_id)
        await self._decorate_last([updated])
        await self.app.publish(user_room(updated["ownerId"]), "conversation-updated", updated)
        if self.app.hooks.implemented("chat_conversation_updated"):
            await self.app.hooks.notify("chat_conversation_updated", conversation=updated, actor=actor)
        return updated

    async def delete_conversation(self, actor: Actor, conversation_id: str) -> None:
        def delete() -> tuple[dict[str, Any], list[str]]:
            with database.atomic():
                conversation = readable(
                    locked(Conversation.select().where(Conversation.id == conversation_id)).first(), actor, write=True)
                wire = conversation_wire(conversation, listing.tags_of([conversation.id])[conversation.id])
                files = [row.file_id for row in MessageFile.select(MessageFile.file_id).distinct()
                         .join(Message, on=(MessageFile.message == Message.id))
                         .where(Message.conversation == conversation.id)]
                uncounts = counters.uncounts_of_conversations(Conversation.id == conversation.id)
                search.unindex_conversation(conversation.id)
                conversation.delete_instance()  # tags, messages and their file links cascade
                counters.apply(uncounts)  # last: see counters' lock order
            return wire, files

        deleted, files = await self.app.db.run(delete)
        await self.app.publish(user_room(deleted["ownerId"]), "conversation-deleted", {"conversationId": conversation_id})
        await rooms.deleted(self.app, [conversation_id])
        await self.app.hooks.chat_conversation_deleted.notify(conversation=deleted, actor=actor, files=files)

    async def list_conversations(self, actor: Actor, query: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The caller's conversations, a page at a time (page, limit, sortBy, sortOrder,
        search in titles, archived, tag): a constant number of queries whatever the page size,
        one when the page kept from an earlier request still holds (see ``listing``)."""
        page, limit = query["page"], query["limit"]
        items, total = await self.app.db.run(listing.cached_page, self.list_pages, actor.id, query, page, limit)
        await self._decorate_last(items)
        return items, {"page": page, "limit": limit, "total": total, "totalPages": -(-total // limit)}

    # -- messages: reading --------------------------------------------------------------

    async def get_message(self, message_id: str) -> dict[str, Any] | None:
        """A live message as the API shows it, or None (no access check)."""

        def read() -> dict[str, Any] | None:
            message = Message.get_or_none(Message.id == message_id, Message.deleted_at.is_null())
            return messages_wire([message])[0] if message else None

        found = await self.app.db.run(read)
        if found:
            await self._decorate([found])
        return found

    async def list_messages(self, actor: Actor, conversation_id: str, *, before: str | None = None,
                            after: str | None = None, limit: int = 50) -> dict[str, Any]:
        """A page of a conversation's messages, newest first: ``before`` gives
        the ``limit`` older than it, ``after`` the ``limit`` immediately newer. ``nextCursor``
        continues in the same direction (pass it as ``after`` when paging with ``after``)."""

        def read() -> dict[str, Any]:
            load_conversation(conversation_id, actor)
            selection = Message.select().where(Message.conversation == conversation_id, Message.deleted_at.is_null())
            if after is not None:
                rows = list(selection.where(Message.id > after).order_by(Message.id.asc()).limit(limit + 1))
                more = len(rows) > limit
                rows = rows[:limit][::-1]
                cursor = rows[0].id if more else None
            else:
                if before is not None:
                    selection = selection.where(Message.id < before)
                rows = list(selection.order_by(Message.id.desc()).limit(limit + 1))
                more = len(rows) > limit
                rows = rows[:limit]
                cursor = rows[-1].id if more else None
            return {"items": messages_wire(rows), "nextCursor": cursor}

        page = await self.app.db.run(read)
        await self._decorate(page["items"])
        return page

    async def replay(self, actor: Actor, conversation_id: str, since: str | None,
                     since_seq: int | None = None) -> dict[str, Any]:
        """What a join answers (docs/websocket.md), but ``generation``: the messages missed
        after ``since`` (a message id) or ``since_seq`` (a change seq), oldest first, edited
        ones again, the ids deleted since, whether more were missed than one answer carries,
        and ``seq``, the conversation's latest change seq: the answer covers every change up
        to it and none after (those reach the socket live)."""

        def read() -> dict[str, Any]:
            # Read first: every change numbered up to it is committed (it is bumped in the
            # change's transaction), and the reads below leave out the later ones.
            latest = load_conversation(conversation_id, actor).seq
            answer: dict[str, Any] = {"conversationId": conversation_id, "missed": [], "hasMore": False,
                                      "deleted": [], "seq": latest}
            in_view = (Message.conversation == conversation_id) & (Message.seq <= latest)
            if since_seq is not None:
                changed = list(Message.select().where(in_view, Message.seq > since_seq)
                               .order_by(Message.seq.asc()).limit(MAX_REPLAY_DELETED + 1))
                deleted = [m.id for m in changed if m.deleted_at is not None]
                missed = sorted((m for m in changed if m.deleted_at is None), key=lambda m: m.id)
            elif since is not None:
                mark = Message.get_or_none(Message.id == since, Message.conversation == conversation_id)
                if mark is None:
                    raise NotFound("since names no message of this conversation")
                newer = list(Message.select().where(in_view, Message.id > since, Message.deleted_at.is_null())
                             .order_by(Message.id.asc()).limit(MAX_REPLAY + 1))
                # Edited or deleted after ``since`` was written (new messages are in ``newer``).
                changed = list(Message.select().where(in_view, Message.updated_at > mark.created_at,
                                                      (Message.id <= since) | Message.deleted_at.is_null(False))
                               .order_by(Message.updated_at.asc()).limit(MAX_REPLAY_DELETED + 1))
                deleted = [m.id for m in changed if m.deleted_at is not None]
                edited = [m for m in changed if m.deleted_at is None and m.id <= since]
                missed = sorted(edited + newer, key=lambda m: m.id)
            else:
                return answer
            answer["hasMore"] = len(missed) > MAX_REPLAY or len(changed) > MAX_REPLAY_DELETED
            answer["missed"], answer["deleted"] = messages_wire(missed[:MAX_REPLAY]), deleted
            return answer

        answer = await self.app.db.run(read)
        await self._decorate(answer["missed"])
        return answer

    async def changes_after(self, conversation_id: str, after: int) -> tuple[list[tuple[int, str, dict[str, Any]]], int]:
        """The frames of the conversation's changes numbered after ``after``, in seq order,
        and the seq they bring a reader up to. Frames are ``(seq, type, data)``:
        ``new-message``, ``message-updated`` (a message stored at or before ``after`` and
        changed since) and ``message-deleted``. A message changed several times is told once,
        as it is now, with its latest seq (so seqs may skip). At most ``MAX_REPLAY`` frames:
        when the returned seq is below the conversation's latest, ask again from it. No access
        check (a node catching its joined sockets up; their joins checked)."""

        def read() -> tuple[list[Message], list[dict[str, Any]], int]:
            conversation = Conversation.get_or_none(Conversation.id == conversation_id)
            if conversation is None:
                return [], [], after
            latest = conversation.seq  # first: every change up to it is committed
            rows = list(Message.select().where(Message.conversation == conversation_id, Message.seq > after,
                                               Message.seq <= latest)
                        .order_by(Message.seq.asc()).limit(MAX_REPLAY + 1))
            if len(rows) > MAX_REPLAY:
                rows = rows[:MAX_REPLAY]
                latest = rows[-1].seq
            return rows, messages_wire([m for m in rows if m.deleted_at is None]), latest

        rows, wires, upto = await self.app.db.run(read)
        await self._decorate(wires)
        by_id = {m["id"]: m for m in wires}
        frames: list[tuple[int, str, dict[str, Any]]] = []
        for row in rows:
            if row.deleted_at is None:
                frames.append((row.seq, "new-message" if row.created_seq > after else "message-updated", by_id[row.id]))
            elif row.created_seq <= after:  # a message never told needs no taking back
                frames.append((row.seq, "message-deleted", deleted_frame(conversation_id, row.id, row.seq)))
        return frames, upto

    async def history(self, conversation_id: str, budget: int, *, leaf_id: str | None = None,
                      cost: Callable[[dict[str, Any]], int] | None = None) -> list[dict[str, Any]]:
        """The current branch's most recent messages that fit ``budget``, oldest first.

        The branch runs from ``leaf_id`` (default: the conversation's ``currentMessageId``)
        back through ``parentId``; each message costs ``cost(message)`` (default: the length
        of its content in characters). The newest message is included even when it alone is
        over the budget. No access check: for plugins acting for the system (the AI)."""
        measure = cost or (lambda message: len(message["content"]))

        def read() -> list[dict[str, Any]]:
            conversation = Conversation.get_or_none(Conversation.id == conversation_id)
            if conversation is None:
                raise NotFound("Conversation not found")
            wanted = leaf_id or conversation.current_message_id
            loaded: dict[str, Message] = {}
            chain: list[Message] = []
            spent = 0
            while wanted is not None:
                if wanted not in loaded:
                    # The branch's messages are older than the leaf: read a step of them at once.
                    step = (Message.select().where(Message.conversation == conversation_id, Message.id <= wanted)
                            .order_by(Message.id.desc()).limit(HISTORY_STEP))
                    loaded.update((m.id, m) for m in step)
                    if wanted not in loaded:
                        break
                message = loaded[wanted]
                if message.deleted_at is None:
                    price = measure(message_wire(message))
                    if chain and spent + price > budget:
                        break
                    spent += price
                    chain.append(message)
                wanted = message.parent_id
            return messages_wire(chain[::-1])

        return await self.app.db.run(read)

    async def search(self, actor: Actor, text: str, *, offset: int = 0, limit: int = 20) -> dict[str, Any]:
        """The caller's conversations' messages matching every word of ``text``, best first."""

        def read() -> dict[str, Any]:
            ids = search.search_message_ids(actor.id, text, offset, limit + 1)
            more = len(ids) > limit
            ids = ids[:limit]
            found = {m.id: m for m in Message.select().where(Message.id.in_(ids))} if ids else {}
            items = messages_wire([found[i] for i in ids if i in found])
            return {"items": items, "nextCursor": str(offset + limit) if more else None}

        result = await self.app.db.run(read)
        await self._decorate(result["items"])
        return result

    async def can_read_file(self, actor: Actor, file_id: str) -> bool:
        """Whether ``file_id`` is attached to a live message of a conversation ``actor`` may
        read (the files plugin lets such readers download it)."""

        def read() -> bool:
            rows = (Conversation.select(Conversation.id, Conversation.owner_id, Conversation.is_public)
                    .join(Message, on=(Message.conversation == Conversation.id))
                    .join(MessageFile, on=(MessageFile.message == Message.id))
                    .where(MessageFile.file_id == file_id, Message.deleted_at.is_null()).distinct())
            for conversation in rows:
                try:
                    readable(conversation, actor, write=False)
                    return True
                except NotFound:
                    continue
            return False

        return await self.app.db.run(read)

    async def held_files(self, file_ids: Iterable[str]) -> set[str]:
        """Which of ``file_ids`` a live message holds (chat owns the message→file link,
        ``chat_message_file``; the files plugin asks before releasing a file)."""
        wanted = list(dict.fromkeys(file_ids))
        if not wanted:
            return set()

        def read() -> set[str]:
            return {row.file_id for row in MessageFile.select(MessageFile.file_id).distinct()
                    .join(Message, on=(MessageFile.message == Message.id))
                    .where(MessageFile.file_id.in_(wanted), Message.deleted_at.is_null())}

        return await self.app.db.run(read)

    # -- messages: writing --------------------------------------------------------------

    async def send_message(self, actor: Actor, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store a user's message (``POST /api/chat/message`` and ``send-message``) and tell
        the room. Returns ``(message, created)``: a retry with a clientMessageId already
        stored answers the stored message with ``created`` False (no second broadcast, no
        second AI reply), or ``Conflict`` when its content differs."""
        draft = Draft.from_body(body)
        hooks = self.app.hooks
        ai_missing = draft.requires_ai and not hooks.chat_ai_reply_requested.implemented()
        filtered: tuple[dict[str, Any], dict[str, Any]] | None = None  # (conversation, draft) the filter saw
        seen = None if ai_missing else self._filtered(draft)
        if ai_missing or seen is not None:
            # A look first: hooks see only messages the caller may store, and never a retry.
            conversation, stored = await self.looks.submit((draft, actor))
            if stored is not None:
                return await self._retried(draft, stored), False
            if ai_missing:
                raise Conflict("An AI reply was requested but no AI plugin is enabled")
            assert seen is not None  # the look was for the filter (no AI plugin raised above)
            filtered = conversation, draft.name(seen)
            try:
                await hooks.chat_message_before_store(conversation=conversation, message=filtered[1], actor=actor)
            except ApiError as refusal:
                await self._refused(filtered, actor, refusal)
                raise
        # The common path: access check, retry check and insert in one savepoint of a batch.
        try:
            message, created, conversation = await self.sends.submit((draft, actor))
        except Exception as failure:  # refused after the filter (deleted meanwhile, …)
            if filtered is not None:
                await self._refused(filtered, actor, failure)
            raise
        if not created:  # a retry (the unique index caught it, also when two raced)
            if filtered is not None:
                await self._refused(filtered, actor, None)
            return await self._retried(draft, message), False
        await self._decorate([message])
        await self.app.publish(conversation_room(draft.conversation_id), "new-message", message)
        await hooks.chat_message_created.notify(conversation=conversation, message=message, actor=actor)
        if draft.requires_ai:
            await hooks.chat_ai_reply_requested.notify(conversation=conversation, message=message, actor=actor)
        return message, True

    def _filtered(self, draft: Draft) -> dict[str, Any] | None:
        """The draft as ``chat_message_before_store`` will see it (``draftId`` not filled in
        yet) if some implementation acts on it (every one that did not declare ``acts_on``
        does); None when none does, and the send skips the look."""
        implementations = self.app.hooks.chat_message_before_store.implementations()
        if not implementations:
            return None
        message = draft.wire()  # built once: the hook gets this one, named
        if any(getattr(function, ACTS_ON, None) is None or getattr(function, ACTS_ON)(message)
               for function in implementations):
            return message
        return None

    async def _refused(self, filtered: tuple[dict[str, Any], dict[str, Any]], actor: Actor,
                       error: Exception | None) -> None:
        """Tell the ``chat_message_before_store`` implementations that a message they let
        through was not stored, so that what they reserved for it is released now."""
        conversation, draft = filtered
        await self.app.hooks.chat_message_refused.notify(conversation=conversation, message=draft, actor=actor,
                                                         error=error)

    async def _retried(self, draft: Draft, stored: dict[str, Any]) -> dict[str, Any]:
        if not draft.same_as(stored):
            raise Conflict("This clientMessageId was already used for a different message")
        await self._decorate([stored])
        return stored

    async def store_assistant_message(self, conversation_id: str, content: str, *, type: str = "text",
                                      parent_id: str | None = None, metadata: dict[str, Any] | None = None,
                                      message_id: str | None = None) -> dict[str, Any]:
        """Store an assistant message (``role: assistant``, ``userId: null``) and broadcast
        ``new-message``. ``parent_id`` defaults to the conversation's current leaf; a
        regenerated reply passes the parent of the reply it replaces (a sibling branch).
        ``message_id`` lets a streaming reply announce its id before it is stored. The
        conversation's ``currentMessageId`` moves to it."""
        row, _, _ = await self.app.db.run(insert_message, conversation_id, user_id=None, role="assistant",
                                       content=content, type=type, parent_id=parent_id, metadata=metadata,
                                       message_id=message_id)
        message = message_wire(row, [])
        await self._decorate([message])
        await self.app.publish(conversation_room(conversation_id), "new-message", message)
        if self.app.hooks.chat_message_created.implemented():
            conversation = await self.get_conversation(conversation_id)
            await self.app.hooks.chat_message_created.notify(conversation=conversation, message=message, actor=None)
        return message

    async def update_message(self, message_id: str, *, content: str | None = None, type: str | None = None,
                             metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Change a message for the system (a streamed reply's final text, an error): no
        access check, not marked edited. Broadcasts ``message-updated``."""
        changes: dict[str, Any] = {}
        if content is not None:
            changes["content"] = content
        if type is not None:
            changes["type"] = type
        if metadata is not None:
            changes["metadata"] = metadata
        return await self._change(None, message_id, changes, edited=False)

    async def edit_message(self, actor: Actor, message_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The author edits their message (``PUT /api/chat/messages/:id``): sets isEdited/editedAt."""
        check_metadata(body)
        changes: dict[str, Any] = {key: body[key] for key in ("content", "metadata") if key in body}
        return await self._change(actor, message_id, changes, edited=True)

    async def _change(self, actor: Actor | None, message_id: str, changes: dict[str, Any], *, edited: bool) -> dict[str, Any]:
        def update() -> tuple[dict[str, Any], dict[str, Any]]:
            with database.atomic():
                message = Message.get_or_none(Message.id == message_id, Message.deleted_at.is_null())
                if message is None:
                    raise NotFound("Message not found")
                conversation = conversation_of_message(message, actor, lock=True)
                if actor is not None and message.user_id != actor.id:
                    raise Forbidden("Only the author can edit a message")
                if actor is not None:
                    readable(conversation, actor, write=True)
                stamp = now()
                for key, value in changes.items():
                    setattr(message, key, value)
                message.updated_at = stamp
                message.seq = next_seq(conversation)
                if edited:
                    message.is_edited, message.edited_at = True, stamp
                message.save()
                if "content" in changes:
                    search.index_message(message.id, conversation.id, conversation.owner_id, message.content, replace=True)
                return messages_wire([message])[0], conversation_wire(conversation, [])

        message, conversation = await self.app.db.run(update)
        await self._decorate([message])
        await self.app.publish(conversation_room(message["conversationId"]), "message-updated", message)
        await self.app.hooks.chat_message_updated.notify(conversation=conversation, message=message, actor=actor)
        return message

    async def delete_message(self, actor: Actor | None, message_id: str) -> None:
        """The conversation's owner deletes any message in it (README: Chat). Soft: the row stays
        as a tombstone (see models); the conversation's count, last message and current leaf
        move off it. Broadcasts ``message-deleted``."""

        def delete() -> tuple[dict[str, Any], dict[str, Any], int]:
            with database.atomic():
                message = Message.get_or_none(Message.id == message_id, Message.deleted_at.is_null())
                if message is None:
                    raise NotFound("Message not found")
                conversation = conversation_of_message(message, actor, write=True, lock=True)
                before = messages_wire([message])[0]
                stamp = now()
                seq = next_seq(conversation)
                tombstoned = Message.update(deleted_at=stamp, updated_at=stamp, content="", metadata={}, seq=seq).where(
                    Message.id == message.id, Message.deleted_at.is_null()).execute()
                if not tombstoned:  # deleted by a concurrent request since it was read (PostgreSQL)
                    raise NotFound("Message not found")
                MessageFile.delete().where(MessageFile.message == message.id).execute()
                search.unindex_messages([message.id])
                changes: dict[Any, Any] = {Conversation.message_count: Conversation.message_count - 1}
                if conversation.last_message_id == message.id or conversation.current_message_id == message.id:
                    latest = (Message.select(Message.id).where(Message.conversation == conversation.id,
                                                               Message.deleted_at.is_null())
                              .order_by(Message.id.desc()).first())
                    latest_id = latest.id if latest else None
                    if conversation.last_message_id == message.id:
                        changes[Conversation.last_message_id] = latest_id
                    if conversation.current_message_id == message.id:
                        parent = message.parent_id and Message.get_or_none(
                            Message.id == message.parent_id, Message.deleted_at.is_null())
                        changes[Conversation.current_message_id] = parent.id if parent else latest_id
                Conversation.update(changes).where(Conversation.id == conversation.id).execute()
                counters.uncount_message(conversation.id, message.created_at)  # last: see counters' lock order
                return before, conversation_wire(conversation, []), seq

        message, conversation, seq = await self.app.db.run(delete)
        await self.app.publish(conversation_room(conversation["id"]), "message-deleted",
                               deleted_frame(conversation["id"], message_id, seq))
        await self.app.hooks.chat_message_deleted.notify(conversation=conversation, message=message, actor=actor)

    async def delete_user_data(self, user_id: str) -> None:
        """Remove a user's conversations (with all their messages) and any message they wrote
        elsewhere; readers joined to those conversations are told. Idempotent."""

        def delete() -> list[str]:
            with database.atomic():
                owned = [c.id for c in locked(Conversation.select(Conversation.id)
                                               .where(Conversation.owner_id == user_id).order_by(Conversation.id))]
                uncounts = counters.uncounts_of_conversations(Conversation.owner_id == user_id)
                for conversation_id in owned:
                    search.unindex_conversation(conversation_id)
                if owned:
                    Conversation.delete().where(Conversation.id.in_(owned)).execute()
                written = [m.id for m in locked(Message.select(Message.id).where(Message.user_id == user_id))]
                search.unindex_messages(written)
                if written:
                    uncounts += counters.uncounts_of_messages(Message.user_id == user_id)  # those left: elsewhere
                    Message.delete().where(Message.id.in_(written)).execute()
                counters.apply(uncounts)  # last: see counters' lock order
            return owned

        await rooms.deleted(self.app, await self.app.db.run(delete))

    async def dashboard_figures(self) -> dict[str, Any]:
        """The admin dashboard's ``conversations`` and ``messages`` parts (see ``counters``)."""
        return await self.app.db.run(counters.figures)

    # -- hooks --------------------------------------------------------------------------

    async def _decorate(self, messages: list[dict[str, Any]]) -> None:
        if messages and self.app.hooks.chat_messages_decorate.implemented():
            await self.app.hooks.chat_messages_decorate.notify(messages=messages)

    async def _decorate_last(self, conversations: list[dict[str, Any]]) -> None:
        await self._decorate([c["lastMessage"] for c in conversations if c["lastMessage"]])


#: The chat plugin's own key to its service, typed as the whole class (other plugins use
#: ``api.CHAT``, typed as the ``Protocol`` they may rely on).
SERVICE: ServiceKey[ChatService] = ServiceKey(CHAT.name)
