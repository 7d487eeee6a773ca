"""The AI plugin's REST routes: the caller's usage, and regenerating a reply.

``POST /api/chat/messages/:id/regenerate`` lives under chat's prefix because it is a chat
operation, but the AI plugin owns it: without an assistant there is nothing to regenerate. It answers 202 with the id the new reply will be stored under, then the reply
streams to the conversation's room like any other; the old reply is kept, and the new one is
its sibling (same parent), which becomes the conversation's ``currentMessageId``.
"""

from __future__ import annotations

from vachat.plugin_api import ApiHandler, Conflict, NotFound, ValidationFailed, endpoint, new_id

from .assistant import Assistant

__all__ = ["ROUTES"]

# Path ids: anything up to the next slash, capped; an id that is not one is simply not found.
ID = r"([^/]{1,64})"


class UsageHandler(ApiHandler):
    @endpoint("My AI token usage today (UTC) and my tier's daily limit", response="ai/usage", tags=("ai",))
    async def get(self) -> None:
        self.respond(await Assistant.of(self.app).usage.report(self.caller.id, self.caller.tier))


class RegenerateHandler(ApiHandler):
    @endpoint("Regenerate an assistant reply as a sibling branch (the old one is kept)", response="ai/regenerate",
              status=202, tags=("chat", "ai"), errors=(400, 403, 404, 409, 429))
    async def post(self, message_id: str) -> None:
        assistant = Assistant.of(self.app)
        chat = assistant.chat
        replaced = await chat.get_message(message_id)
        if replaced is None:
            raise NotFound("Message not found")
        try:
            conversation = await chat.check_access(self.caller, replaced["conversationId"], write=True)
        except NotFound:  # another's private conversation: the same answer as no such message
            raise NotFound("Message not found") from None
        if replaced["role"] != "assistant":
            raise ValidationFailed("Only an assistant reply can be regenerated", details=[
                {"field": "id", "message": "is not an assistant message"}])
        if replaced["parentId"] is None:
            raise ValidationFailed("This reply answers no message", details=[
                {"field": "id", "message": "has no parent message to answer again"}])
        token = await assistant.refuse_or_reserve(conversation, self.caller, leaf_id=replaced["parentId"])
        reply_id = new_id()
        started = await assistant.start(conversation, parent_id=replaced["parentId"], user_id=self.caller.id,
                                        token=token, message_id=reply_id)
        if started is None:
            raise Conflict("The assistant is already answering in this conversation")
        self.respond({"conversationId": conversation["id"], "messageId": reply_id,
                      "parentId": replaced["parentId"], "replaces": message_id}, status=202)


ROUTES = [
    (r"/api/ai/usage", UsageHandler),
    (rf"/api/chat/messages/{ID}/regenerate", RegenerateHandler),
]
