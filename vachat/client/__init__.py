"""vachat's Python client: the REST API and a live WebSocket that survives drops.

    from vachat.client import Client

    async with Client("http://localhost:3000") as client:
        await client.sign_in("me@example.com", "…")          # or Client(url, api_key="vak_…")
        conversation = await client.create_conversation("Hello")
        async with client.live() as live:
            await live.join(conversation.id)
            reply = await live.ask(conversation.id, "Hi there")
            async for delta in reply:
                print(delta, end="", flush=True)
            print()

It is a client of the public protocol and imports nothing from the server (README, "Python
client"): ``rest`` (``Client``), ``live`` (``LiveConnection``, the transport), ``rooms`` (what
it knows of each joined conversation), ``replies`` (``ReplyStream``), ``events``, ``models``,
``errors``; ``terminal`` is the ``vachat chat`` command built on them.
"""

from .errors import (
    ApiError, ClientError, Conflict, ConnectionFailed, Forbidden, NotFound, PayloadTooLarge, ProtocolMismatch,
    QuotaExceeded, RateLimited, ServerError, TokenExpired, Unauthorized, Unavailable, UnsupportedMediaType,
    ValidationFailed,
)
from .events import (
    AiDelta, AiDone, AiTyping, ConversationCreated, ConversationDeleted, ConversationUpdated, Disconnected,
    ErrorEvent, Event, MessageDeleted, MessageUpdated, NewMessage, OtherEvent, Ready, Reconnected,
    UserStoppedTyping, UserTyping,
)
from .live import PROTOCOL_VERSION, Backoff, LiveConnection
from .replies import ReplyStream
from .models import Conversation, FileInfo, Message, MessagePage, Page, User
from .rest import DEFAULT_URL, Client, Tokens, token_expiry

__all__ = [
    "Client", "Tokens", "token_expiry", "DEFAULT_URL", "LiveConnection", "ReplyStream", "Backoff",
    "PROTOCOL_VERSION",
    "Message", "Conversation", "MessagePage", "Page", "FileInfo", "User",
    "Event", "Ready", "NewMessage", "MessageUpdated", "MessageDeleted", "ConversationCreated",
    "ConversationUpdated", "ConversationDeleted", "UserTyping", "UserStoppedTyping", "AiTyping", "AiDelta",
    "AiDone", "ErrorEvent", "OtherEvent", "Disconnected", "Reconnected",
    "ClientError", "ApiError", "ValidationFailed", "Unauthorized", "TokenExpired", "Forbidden", "NotFound",
    "Conflict", "PayloadTooLarge", "UnsupportedMediaType", "RateLimited", "QuotaExceeded", "ServerError",
    "Unavailable", "ConnectionFailed", "ProtocolMismatch",
]
