"""The hooks the chat plugin offers to other plugins (declared through ``vachat_addhooks``).

Implement one with ``@hookimpl`` (``@hookimpl(optionalhook=True)`` when your plugin works
without chat) in your plugin module, taking only the arguments you need. ``conversation`` and
``message`` are the wire shapes of the API (camelCase dicts); in hooks about a
message, ``conversation.tags`` and ``conversation.lastMessage`` are not filled in.
``actor`` is the caller (``vachat.plugin_api.Actor``), or None when another plugin acts for
the system (the AI storing its reply).

Order and failures follow the core's rules (``vachat.hookspecs``): ``tryfirst``, then load
order, then ``trylast``; the
``before`` filter may refuse with an ``ApiError`` that reaches the client; in the
notifications a failure is logged and the other plugins still run. Hooks may be coroutines.
"""

from __future__ import annotations

from typing import Any

from vachat.plugin_api import Actor, App, MaybeAwaitable, hookspec

# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


@hookspec
def chat_message_before_store(app: App, conversation: dict[str, Any], message: dict[str, Any], actor: Actor) -> MaybeAwaitable[None]:
    """A user's message is about to be stored: refuse it by raising an ``ApiError``.

    Runs after the access check and the ``clientMessageId`` retry check (a retry of a stored
    message never gets here), before anything is written. ``message`` is the draft:
    ``{draftId, conversationId, content, type, files (ids), parentId, metadata, clientMessageId,
    requiresAIResponse}``; the return value is ignored. How the files plugin checks that the
    caller owns the attached files (``NotFound``), and the AI plugin its quota
    (``QuotaExceeded``) and one generation at a time (``Conflict``).

    Reserve something for the message here (a slot, a quota unit) only with a release in
    ``chat_message_refused``: a later implementation may still refuse it.

    An implementation that acts only on some messages says which with
    ``@plugins.chat.api.acts_on(predicate)`` under its ``@hookimpl`` (files: messages with
    files; AI: ``requiresAIResponse``). A message no enabled implementation acts on is stored
    without calling this hook, in one database call instead of two; without ``acts_on`` an
    implementation sees every message. The predicate gets the message with ``draftId`` None
    (an attempt is named only once a hook is to see it).
    """


@hookspec
def chat_message_refused(app: Any, conversation: dict[str, Any], message: dict[str, Any], actor: Any,
                         error: Any) -> Any:
    """A message that ``chat_message_before_store`` ran for was not stored: release at once
    whatever your implementation reserved for it.

    Called for every such message, whoever refused it: a ``before_store`` implementation
    raised (``error`` is that ``ApiError``; your own refusal included, and implementations
    after it never saw the message), storing it failed (``error`` is the exception), or it
    turned out to be a retry of a message already stored (``error`` None). ``message`` is the
    draft ``before_store`` saw; its ``draftId`` names this attempt, so release only what you
    reserved under that id. Failures are logged; the caller still gets the refusal.
    """


@hookspec
def chat_messages_decorate(app: App, messages: list[dict[str, Any]]) -> MaybeAwaitable[None]:
    """Add to messages on their way to a client, in place, a batch at a time.

    Called with every page, replay, search result and broadcast message before it leaves
    (not with tombstones). Do one query for the whole batch, never one per message: how the
    files plugin replaces each ``files`` entry ``{"id"}`` with the file's metadata.
    """


@hookspec
def chat_message_created(app: App, conversation: dict[str, Any], message: dict[str, Any], actor: Actor | None) -> MaybeAwaitable[None]:
    """A message was stored and broadcast (``new-message``): a user's, or the assistant's
    (``actor`` None). Not called for a ``clientMessageId`` retry."""


@hookspec
def chat_message_updated(app: App, conversation: dict[str, Any], message: dict[str, Any], actor: Actor | None) -> MaybeAwaitable[None]:
    """A message was edited by its author or updated by the system (``message-updated``
    was broadcast); ``message`` is the new version."""


@hookspec
def chat_message_deleted(app: App, conversation: dict[str, Any], message: dict[str, Any], actor: Actor | None) -> MaybeAwaitable[None]:
    """A message was deleted (``message-deleted`` was broadcast); ``message`` is the version
    before the deletion, with its ``files``, so attachments can be released."""


@hookspec
def chat_conversation_before_store(app: App, changes: dict[str, Any], actor: Actor,
                                   conversation_id: str | None) -> MaybeAwaitable[None]:
    """A conversation is about to be created (``conversation_id`` None) or changed: refuse it
    by raising an ``ApiError``.

    ``changes`` is the request body as validated by its schema (wire names: ``title``,
    ``metadata`` …; on a change only the fields being set). Runs before the access check
    of a change and before anything is written; the return value is ignored. How the AI plugin
    caps ``metadata.systemPrompt`` (``ValidationFailed``).
    """


@hookspec
def chat_conversation_created(app: App, conversation: dict[str, Any], actor: Actor) -> MaybeAwaitable[None]:
    """A conversation was created (``conversation-created`` was sent to the owner's devices)."""


@hookspec
def chat_conversation_updated(app: App, conversation: dict[str, Any], actor: Actor) -> MaybeAwaitable[None]:
    """A conversation's title, description, tags, flags, metadata or current message changed
    (``conversation-updated`` was sent to the owner's devices); ``conversation`` is the new
    version."""


@hookspec
def chat_conversation_deleted(app: App, conversation: dict[str, Any], actor: Actor | None,
                              files: list[str]) -> MaybeAwaitable[None]:
    """A conversation and all its messages were deleted (``conversation-deleted`` was sent
    to the owner's devices); ``files`` are the ids of the files its messages held, so
    attachments can be released (``ChatService.held_files`` tells which another message
    still holds). Not called when a whole account is deleted: use the core's
    ``vachat_user_deleting`` for that."""


# ---------------------------------------------------------------------------
# The assistant (implemented by the AI plugin)
# ---------------------------------------------------------------------------


@hookspec
def chat_ai_reply_requested(app: App, conversation: dict[str, Any], message: dict[str, Any], actor: Actor) -> MaybeAwaitable[None]:
    """A user's message asked for an AI reply (``requiresAIResponse``) and was stored and
    broadcast: start generating (in a task; do not hold the caller).

    Produce the reply through the ``chat`` service: ``history`` for the context and
    ``store_assistant_message`` for the result (``type: "error"`` for a failure). When no
    enabled plugin implements this hook, such a message is refused with 409 ``CONFLICT``
    before anything is stored. Refusals (quota, a generation already running) belong in
    ``chat_message_before_store``: by now the message is stored.
    """


@hookspec(firstresult=True)
def chat_generation_status(app: App, conversation_id: str) -> MaybeAwaitable[dict[str, Any] | None]:
    """The reply being generated in ``conversation_id`` right now, for a join's answer:
    ``{"messageId", "text" (so far), "index" (of the last ai-delta in it)}``, or None.

    The first answer wins. The join drops held ``ai-delta`` frames of that message up to
    ``index``, so the client gets the text so far, then the deltas after it: no gap, no repeat.
    """
