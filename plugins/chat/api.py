"""What the chat plugin promises other plugins: its service's ``Protocol`` and the key it is
published under.

Another plugin imports these (types and one constant, nothing that touches the database) and
calls ``app.service(CHAT)``, which mypy types as ``ChatService``; it never rebuilds chat's names
(a conversation's room is ``room_of(conversation_id)``). Messages and conversations are the
API's wire shapes (camelCase dicts).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol, TypeVar

from vachat.plugin_api import Actor, ServiceKey

__all__ = ["ChatService", "CHAT", "acts_on", "ACTS_ON"]

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute ``acts_on`` sets on an implementation (read by the chat service).
ACTS_ON = "chat_acts_on"


def acts_on(predicate: Callable[[dict[str, Any]], bool]) -> Callable[[F], F]:
    """Declare that a ``chat_message_before_store`` implementation does nothing for a draft
    unless ``predicate(draft)`` (``draft`` is the ``message`` the hook would get, but for its
    ``draftId``, None until the hook is called: an attempt is named only when a hook sees
    it), e.g. the files plugin's ``@acts_on(lambda draft: bool(draft["files"]))``. Put it under ``@hookimpl``.

    When no enabled implementation acts on a draft, chat does not call the hook for it and
    stores it in one database call (the access and retry checks and the insert, as always),
    instead of a look first and the insert after: one thread hop per send instead of two.
    An implementation without ``acts_on`` acts on every message. The predicate runs on the
    IOLoop for every send: it must be cheap, and must never raise."""

    def declare(function: F) -> F:
        setattr(function, ACTS_ON, predicate)
        return function

    return declare


class ChatService(Protocol):
    """The chat service, as other plugins may use it."""

    def room_of(self, conversation_id: str) -> str:
        """The hub room whose sockets hear a conversation's events (``app.publish(room, …)``)."""
        ...

    async def create_conversation(self, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
        """Create a conversation of ``actor``'s from the fields of ``POST /api/chat/conversations``
        (checked by the same hooks); the conversation, as the API shows it."""
        ...

    async def send_message(self, actor: Actor, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store ``actor``'s message (the body of ``POST /api/chat/message``), as that route does:
        ``(message, created)``; ``created`` is False for a ``clientMessageId`` retry."""
        ...

    async def get_conversation(self, conversation_id: str) -> dict[str, Any] | None:
        """A conversation as the API shows it, or None (no access check)."""
        ...

    async def check_access(self, actor: Actor | None, conversation_id: str, write: bool = False) -> dict[str, Any]:
        """The conversation if ``actor`` may read it (``write``: change it); else ``NotFound``
        or ``Forbidden``."""
        ...

    async def get_message(self, message_id: str) -> dict[str, Any] | None:
        """A live message as the API shows it, or None (no access check)."""
        ...

    async def history(self, conversation_id: str, budget: int, *, leaf_id: str | None = None,
                      cost: Callable[[dict[str, Any]], int] | None = None) -> list[dict[str, Any]]:
        """The current branch's most recent messages that fit ``budget``, oldest first."""
        ...

    async def store_assistant_message(self, conversation_id: str, content: str, *, type: str = "text",
                                      parent_id: str | None = None, metadata: dict[str, Any] | None = None,
                                      message_id: str | None = None) -> dict[str, Any]:
        """Store an assistant message and broadcast ``new-message``; the stored message."""
        ...

    async def update_message(self, message_id: str, *, content: str | None = None, type: str | None = None,
                             metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Change a message for the system (no access check, not marked edited); broadcasts
        ``message-updated``."""
        ...

    async def delete_message(self, actor: Actor | None, message_id: str) -> None:
        """Delete a message (``actor`` None: the system); broadcasts ``message-deleted``."""
        ...

    async def can_read_file(self, actor: Actor, file_id: str) -> bool:
        """Whether ``file_id`` is attached to a live message of a conversation ``actor`` may read."""
        ...

    async def held_files(self, file_ids: Iterable[str]) -> set[str]:
        """Which of ``file_ids`` are attached to a live message (chat owns that link)."""
        ...

    async def delete_user_data(self, user_id: str) -> None:
        """Remove a user's conversations and every message they wrote. Idempotent."""
        ...

    async def readable_among(self, questions: list[tuple[Actor, list[str]]]) -> list[set[str]]:
        """For each ``(actor, conversation ids)``, the ids that actor may read (one query)."""
        ...

    async def dashboard_figures(self) -> dict[str, Any]:
        """The admin dashboard's ``conversations`` and ``messages`` parts."""
        ...


#: ``app.service(CHAT)``: the chat plugin's service, typed.
CHAT: ServiceKey[ChatService] = ServiceKey("chat")
