"""The chat plugin's REST routes (README: Chat): thin handlers over ``ChatService``.

Each handler validates through its declared schemas, asks the service, and answers with the
envelope: 201 for a created conversation or message, 200 with the stored message for a
``clientMessageId`` retry, ``data: null`` for deletes.
"""

from __future__ import annotations

from typing import Any

from vachat.plugin_api import ApiHandler, ValidationFailed, endpoint

from .service import SERVICE, ChatService

__all__ = ["ROUTES"]

TAGS = ("chat",)
# Path ids: anything up to the next slash, capped; an id that is not one is simply not found.
ID = r"([^/]{1,64})"


class ChatHandler(ApiHandler):
    @property
    def chat(self) -> ChatService:
        return self.app.service(SERVICE)


class ConversationsHandler(ChatHandler):
    @endpoint("List my conversations, with their last message and message count",
              query="chat/conversation-list-query", response="chat/conversation-list", tags=TAGS)
    async def get(self) -> None:
        items, pagination = await self.chat.list_conversations(self.caller, self.query)
        self.respond(items, pagination=pagination)

    @endpoint("Start a conversation", body="chat/conversation-create", response="chat/conversation",
              status=201, tags=TAGS)
    async def post(self) -> None:
        self.respond(await self.chat.create_conversation(self.caller, self.body), status=201)


class ConversationHandler(ChatHandler):
    @endpoint("Read a conversation (owner, public, or conversations.read_all)",
              response="chat/conversation", tags=TAGS, errors=(404,))
    async def get(self, conversation_id: str) -> None:
        self.respond(await self.chat.read_conversation(self.caller, conversation_id))

    @endpoint("Change a conversation (owner only)", body="chat/conversation-update",
              response="chat/conversation", tags=TAGS, errors=(403, 404))
    async def put(self, conversation_id: str) -> None:
        self.respond(await self.chat.update_conversation(self.caller, conversation_id, self.body))

    @endpoint("Delete a conversation and all its messages (owner only)", tags=TAGS, errors=(403, 404))
    async def delete(self, conversation_id: str) -> None:
        await self.chat.delete_conversation(self.caller, conversation_id)
        self.respond(None)


class MessagesHandler(ChatHandler):
    @endpoint("A page of a conversation's messages, newest first (cursor: before or after)",
              query="chat/message-page-query", response="chat/message-page", tags=TAGS, errors=(404,))
    async def get(self, conversation_id: str) -> None:
        query: dict[str, Any] = self.query
        if "before" in query and "after" in query:
            raise ValidationFailed("Give before or after, not both",
                                   details=[{"field": "after", "message": "cannot be combined with before"}])
        self.respond(await self.chat.list_messages(self.caller, conversation_id, before=query.get("before"),
                                                   after=query.get("after"), limit=query["limit"]))


class SendMessageHandler(ChatHandler):
    @endpoint("Send a message (201; a clientMessageId retry answers the stored one with 200)",
              body="chat/message-create", response="chat/message", status=201, tags=TAGS, errors=(403, 404, 409))
    async def post(self) -> None:
        message, created = await self.chat.send_message(self.caller, self.body)
        self.respond(message, status=201 if created else 200)


class MessageHandler(ChatHandler):
    @endpoint("Edit my message (sets isEdited and editedAt)", body="chat/message-update",
              response="chat/message", tags=TAGS, errors=(403, 404))
    async def put(self, message_id: str) -> None:
        self.respond(await self.chat.edit_message(self.caller, message_id, self.body))

    @endpoint("Delete a message (the conversation's owner)", tags=TAGS, errors=(403, 404))
    async def delete(self, message_id: str) -> None:
        await self.chat.delete_message(self.caller, message_id)
        self.respond(None)


class SearchHandler(ChatHandler):
    @endpoint("Full-text search in my conversations' messages, best match first",
              query="chat/search-query", response="chat/message-page", tags=TAGS)
    async def get(self) -> None:
        query: dict[str, Any] = self.query
        self.respond(await self.chat.search(self.caller, query["q"], offset=int(query.get("cursor") or 0),
                                            limit=query["limit"]))


ROUTES = [
    (r"/api/chat/conversations", ConversationsHandler),
    (rf"/api/chat/conversations/{ID}", ConversationHandler),
    (rf"/api/chat/conversations/{ID}/messages", MessagesHandler),
    (r"/api/chat/message", SendMessageHandler),
    (rf"/api/chat/messages/{ID}", MessageHandler),
    (r"/api/chat/search", SearchHandler),
]
