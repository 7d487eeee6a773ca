"""``GET /v1/models`` and ``POST /v1/chat/completions``: the OpenAI chat-completions API over
vachat conversations.

Each call is a conversation of the caller's: ``X-Vachat-Conversation-Id`` names one (its
history is the context; earlier ``messages`` of the request are ignored), or a new one is made,
titled from the first user message, with the request's earlier messages stored first as its
history (``system`` messages become its ``metadata.systemPrompt``). The last user message is
stored with ``requiresAIResponse`` like any other, so quotas, the one-reply-per-conversation
rule, rate limits and permissions apply unchanged, and sockets joined to the conversation see
the reply stream as usual. The answer's ``X-Vachat-Conversation-Id`` names the conversation.

Errors use OpenAI's shape (``{"error": {message, type, code}}``) so SDKs raise their usual
exceptions; 409 and 429 carry ``x-should-retry: false``, so SDKs do not retry them blindly.
A client that goes away before the reply is complete stops it (stored ``cancelled``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tornado.iostream import StreamClosedError

from plugins.ai.api import AI
from plugins.chat.api import CHAT
from vachat.plugin_api import ApiError, ApiHandler, NotFound, Route, endpoint, json_dumps

from .replies import Delta, Done, ReplyWatch, close_watch, open_watch
from .wire import ModelNotFound, ReplyFailed, chunk, completion, error_body, finish_reason_of, read_turn, title_from, \
    usage_of

__all__ = ["ROUTES", "CONVERSATION_HEADER"]

CONVERSATION_HEADER = "X-Vachat-Conversation-Id"
# Statuses an SDK must not retry on its own: the same request would meet the same refusal
# (a reply already running, a quota or rate limit) until something changes.
NO_RETRY_STATUSES = frozenset({409, 429})
OWNER = "vachat"


class OpenAIHandler(ApiHandler):
    """An ``ApiHandler`` whose errors have OpenAI's shape."""

    exposed_headers = (CONVERSATION_HEADER,)

    def write_api_error(self, error: ApiError, exc_info: Any = None) -> None:
        if error.status in NO_RETRY_STATUSES:
            self.set_header("x-should-retry", "false")
        self.write_json(error_body(error))

    @property
    def model(self) -> str:
        return str(self.app.service(AI).model)


class ModelsHandler(OpenAIHandler):
    @endpoint("The model the assistant uses (OpenAI-compatible)", response="openai_compat/model-list", tags=("openai",))
    async def get(self) -> None:
        self.write_json({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": 0, "owned_by": OWNER}]})


class ChatCompletionsHandler(OpenAIHandler):
    watch: ReplyWatch | None = None
    conversation_id: str | None = None
    reply_finished = False

    @endpoint("A reply from the assistant (OpenAI-compatible chat completions)",
              body="openai_compat/chat-completion-request", response="openai_compat/chat-completion",
              tags=("openai",), errors=(400, 404, 409, 429, 502),
              description=f"`{CONVERSATION_HEADER}` names one of your conversations to continue; without it a new "
                          "one is made from `messages`. `stream: true` answers server-sent events of "
                          "`chat.completion.chunk` objects, then `data: [DONE]`.")
    async def post(self) -> None:
        body = self.body
        model = self.model
        if body["model"] != model:
            raise ModelNotFound(f"The model '{body['model']}' does not exist; this server answers with '{model}'")
        turn = read_turn(body["messages"])
        conversation_id = await self._conversation(turn)
        self.conversation_id = conversation_id
        self.set_header(CONVERSATION_HEADER, conversation_id)
        generation: dict[str, Any] = {}
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens is not None:
            generation["maxTokens"] = max_tokens
        if body.get("temperature") is not None:
            generation["temperature"] = body["temperature"]
        self.watch = open_watch(self.app, conversation_id)
        try:
            await self.app.service(CHAT).send_message(self.caller, {
                "conversationId": conversation_id, "content": turn.last_user, "requiresAIResponse": True,
                **({"metadata": {"generation": generation}} if generation else {})})
            created = int(time.time())
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                await self._stream(model, created, include_usage)
            else:
                reply = await self._reply()
                self.write_json(completion(reply, model, created))
        finally:
            close_watch(self.app, self.watch)

    async def _conversation(self, turn: Any) -> str:
        chat = self.app.service(CHAT)
        named = self.request.headers.get(CONVERSATION_HEADER, "").strip()
        if named:
            try:
                await chat.check_access(self.caller, named, write=True)
            except ApiError as refused:
                # Someone else's conversation, readable or not, is "not found" here.
                raise NotFound("Conversation not found") if refused.status in (403, 404) else refused
            return named
        fields: dict[str, Any] = {"title": title_from(next((text for role, text in turn.history if role == "user"),
                                                           turn.last_user))}
        if turn.system:
            fields["metadata"] = {"systemPrompt": turn.system}
        conversation = await chat.create_conversation(self.caller, fields)
        for role, text in turn.history:
            if role == "user":
                await chat.send_message(self.caller, {"conversationId": conversation["id"], "content": text})
            else:
                await chat.store_assistant_message(conversation["id"], text)
        return str(conversation["id"])

    async def _reply(self) -> dict[str, Any]:
        """The stored reply, once it is complete; ``ReplyFailed`` when it is an error."""
        assert self.watch is not None
        while True:
            event = await self.watch.events.get()
            if isinstance(event, Done):
                self.reply_finished = True
                if event.message["type"] == "error":
                    raise ReplyFailed(event.message["content"])
                return event.message

    async def _stream(self, model: str, created: int, include_usage: bool) -> None:
        assert self.watch is not None
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # a proxy must pass each event on at once
        started = False
        try:
            while True:
                event = await self.watch.events.get()
                if isinstance(event, Delta):
                    if not started:
                        self._event(chunk(event.message_id, model, created, {"role": "assistant", "content": ""},
                                          include_usage=include_usage))
                        started = True
                    self._event(chunk(event.message_id, model, created, {"content": event.text},
                                      include_usage=include_usage))
                    await self.flush()
                    continue
                self.reply_finished = True
                reply = event.message
                if reply["type"] == "error":
                    self._event(error_body(ReplyFailed(reply["content"])))
                else:
                    if not started:
                        self._event(chunk(reply["id"], model, created, {"role": "assistant", "content": ""},
                                          include_usage=include_usage))
                    self._event(chunk(reply["id"], model, created, {}, finish_reason_of(reply),
                                      include_usage=include_usage))
                    if include_usage:
                        final = chunk(reply["id"], model, created, {}, include_usage=True, usage=usage_of(reply))
                        final["choices"] = []
                        self._event(final)
                self.write("data: [DONE]\n\n")
                await self.flush()
                return
        except StreamClosedError:
            pass  # on_connection_close stops the reply

    def _event(self, data: dict[str, Any]) -> None:
        self.write(f"data: {json_dumps(data)}\n\n")

    def on_connection_close(self) -> None:
        if self.conversation_id is not None and not self.reply_finished:
            # The client went away before the reply was complete: stop it (stored "cancelled").
            task = asyncio.ensure_future(self.app.service(AI).stop(self.conversation_id))
            _stopping.add(task)
            task.add_done_callback(_stopping.discard)
        if self.watch is not None:
            self.watch.events.put_nowait(Done({"id": "", "type": "error", "content": "The client went away"}))
        super().on_connection_close()


# Stops under way: kept referenced until done (a task nobody holds may be collected).
_stopping: set[asyncio.Task[Any]] = set()

ROUTES: list[Route] = [
    (r"/v1/models", ModelsHandler),
    (r"/v1/chat/completions", ChatCompletionsHandler),
]
