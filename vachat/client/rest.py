"""``Client``: vachat's REST API (README: REST conventions) from asyncio code, with its credentials.

It signs in with an e-mail and password (or registers), or uses an API key, and keeps the
access token fresh: before a request it decodes the token's ``exp`` (without verifying the
signature, which only the server can) and refreshes it when it is about to expire; a request
the server still answers ``TOKEN_EXPIRED`` (clocks disagree) is refreshed once and retried.
Refreshing rotates the refresh token, and presenting a used one ends the session, so one
refresh at a time runs: concurrent callers wait for it and use its result.

Every failure is raised as the typed error of its code (``vachat.client.errors``).
``client.live()`` opens the WebSocket connection (``vachat.client.live``).

This module imports nothing from the server: it is a client of the public protocol, on
Tornado's HTTP client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import mimetypes
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

import tornado.httpclient

from .errors import ConnectionFailed, TokenExpired, Unauthorized, error_from_envelope
from .live import LiveConnection
from .models import Conversation, FileInfo, Message, MessagePage, Page, User, new_client_message_id

__all__ = ["Client", "Tokens", "token_expiry", "new_client_message_id", "DEFAULT_URL"]

DEFAULT_URL = "http://localhost:3000"
# A token is refreshed this long before it expires (s), so a request made just before the end
# does not arrive just after it; capped at a quarter of the token's life for very short ones.
REFRESH_AHEAD_SECONDS = 60.0
REFRESH_AHEAD_SHARE = 0.25
# Seconds a request may take in all (an upload of MAX_FILE_SIZE on a slow link fits).
REQUEST_TIMEOUT = 60.0
# A REST send is retried this many times when the server cannot be reached: clientMessageId
# makes a retry safe (the server stores the message once).
SEND_RETRIES = 3
SEND_RETRY_DELAY = 0.5


@dataclass
class Tokens:
    """An access/refresh pair as the server issued it."""

    access: str
    refresh: str

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "Tokens":
        return cls(access=data["accessToken"], refresh=data["refreshToken"])


def token_expiry(token: str) -> tuple[float, float] | None:
    """``(iat, exp)`` of a JWT, read without verifying it (the client cannot, and need not: it
    only wants to know when to refresh). None when the token is not a readable JWT."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims.get("iat", 0)), float(claims["exp"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


class Client:
    """The REST API of one vachat server, as one signed-in user (or none yet).

    ``base_url`` is the server (``http://localhost:3000``); ``api_key`` signs every request
    with ``X-API-Key`` instead of tokens; ``tokens`` resumes a session; ``clock`` is the
    wall clock used to judge token expiry (``time.time``).
    """

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, tokens: Tokens | None = None,
                 request_timeout: float = REQUEST_TIMEOUT, clock: Callable[[], float] = time.time,
                 user_agent: str = "vachat-client") -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.tokens = tokens
        self.user: User | None = None
        self.session_id: str | None = None
        self.request_timeout = request_timeout
        self.clock = clock
        self.user_agent = user_agent
        self.refresh_count = 0  # how many times the tokens were renewed (for the curious and tests)
        self._http = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        self._refreshing: asyncio.Future[Tokens] | None = None

    # -- where ---------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint of this server (``ws://…/ws`` or ``wss://…/ws``)."""
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))

    async def close(self) -> None:
        self._http.close()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- credentials -----------------------------------------------------------------------

    async def sign_in(self, email: str, password: str) -> User:
        """``POST /api/auth/login``; keeps the tokens."""
        data = await self.request("POST", "/api/auth/login", json={"email": email, "password": password}, auth=False)
        return self._signed_in(data)

    async def register(self, email: str, password: str, **profile: Any) -> User:
        """``POST /api/auth/register`` (``firstName``, ``displayName`` … in ``profile``); signs in."""
        data = await self.request("POST", "/api/auth/register", json={"email": email, "password": password, **profile},
                                  auth=False)
        return self._signed_in(data)

    def _signed_in(self, data: dict[str, Any]) -> User:
        self.tokens = Tokens.from_wire(data["tokens"])
        self.session_id = data.get("sessionId")
        self.user = User.from_wire(data["user"])
        return self.user

    async def me(self) -> User:
        """``GET /api/auth/me``: who this client is (also how an API key learns it)."""
        self.user = User.from_wire(await self.request("GET", "/api/auth/me"))
        return self.user

    async def sign_out(self) -> None:
        """``POST /api/auth/logout``: ends this session on the server."""
        if self.tokens is not None:
            await self.request("POST", "/api/auth/logout")
            self.tokens = None

    def _refresh_due(self, token: str) -> bool:
        times = token_expiry(token)
        if times is None:
            return False
        issued, expires = times
        ahead = min(REFRESH_AHEAD_SECONDS, max(expires - issued, 0) * REFRESH_AHEAD_SHARE)
        return self.clock() >= expires - ahead

    async def refresh(self, stale: str | None = None) -> Tokens:
        """Exchange the refresh token for a new pair (``POST /api/auth/refresh``). One at a
        time: a caller arriving during a refresh gets its result; one whose ``stale`` access
        token was already replaced gets the current pair without another refresh."""
        if self.tokens is None:
            raise Unauthorized("Not signed in", code="UNAUTHORIZED")
        if stale is not None and self.tokens.access != stale:
            return self.tokens
        if self._refreshing is not None:
            return await asyncio.shield(self._refreshing)
        self._refreshing = asyncio.get_running_loop().create_future()
        try:
            data = await self.request("POST", "/api/auth/refresh", json={"refreshToken": self.tokens.refresh},
                                      auth=False)
            self.tokens = Tokens.from_wire(data["tokens"])
            self.refresh_count += 1
            self._refreshing.set_result(self.tokens)
            return self.tokens
        except BaseException as error:
            self._refreshing.set_exception(error)
            self._refreshing.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            self._refreshing = None

    async def auth_headers(self) -> dict[str, str]:
        """The headers that authenticate a request now, the token refreshed first if due."""
        if self.api_key:
            return {"X-API-Key": self.api_key}
        if self.tokens is None:
            return {}
        if self._refresh_due(self.tokens.access):
            await self.refresh(stale=self.tokens.access)
        return {"Authorization": f"Bearer {self.tokens.access}"}

    # -- requests ----------------------------------------------------------------------------

    async def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                      body: bytes | None = None, headers: dict[str, str] | None = None, auth: bool = True,
                      envelope: bool = False, streaming_callback: Callable[[bytes], None] | None = None) -> Any:
        """One API call; returns the envelope's ``data`` (the whole envelope with ``envelope``).
        Raises the typed ``ApiError`` of a failure, ``ConnectionFailed`` when unreachable.
        With ``streaming_callback`` a successful body goes to it as it arrives (None is
        returned); an error's body is still read as the error."""
        for attempt in range(2):
            all_headers = {"User-Agent": self.user_agent, "Accept": "application/json", **(headers or {})}
            sent_token = None
            if auth:
                all_headers.update(await self.auth_headers())
                sent_token = self.tokens.access if self.tokens and not self.api_key else None
            try:
                return await self._fetch(method, path, json=json, params=params, body=body, headers=all_headers,
                                         envelope=envelope, streaming_callback=streaming_callback)
            except TokenExpired:
                # The server's clock says expired, ours did not: refresh once and try again.
                if attempt or sent_token is None:
                    raise
                await self.refresh(stale=sent_token)
        raise AssertionError("unreachable")

    async def _fetch(self, method: str, path: str, *, json: Any, params: dict[str, Any] | None, body: bytes | None,
                     headers: dict[str, str], envelope: bool,
                     streaming_callback: Callable[[bytes], None] | None) -> Any:
        url = self.base_url + path
        query = {key: _query_value(value) for key, value in (params or {}).items() if value is not None}
        if query:
            url += "?" + urlencode(query)
        if json is not None:
            body = _json_dumps(json)
            headers.setdefault("Content-Type", "application/json")
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        status = [0]
        error_body = bytearray()
        sink: Callable[[bytes], None] | None = None
        if streaming_callback is not None:
            def on_header(line: str) -> None:
                if line.startswith("HTTP/"):  # the status line: decides where the body goes
                    status[0] = int(line.split(" ", 2)[1])

            def stream(chunk: bytes) -> None:
                (streaming_callback if status[0] < 400 else error_body.extend)(chunk)

            sink = stream
        try:
            response = await self._http.fetch(url, method=method, headers=headers, body=body, raise_error=False,
                                              request_timeout=self.request_timeout, streaming_callback=sink,
                                              header_callback=on_header if sink is not None else None)
        except (OSError, tornado.httpclient.HTTPClientError) as error:
            raise ConnectionFailed(f"Cannot reach {self.base_url}: {error}") from error
        if response.code == 599:
            raise ConnectionFailed(f"Cannot reach {self.base_url}: {response.error}")
        if streaming_callback is not None and response.code < 400:
            return None
        raw = bytes(error_body) if streaming_callback is not None else response.body
        try:
            parsed = _json_loads(raw) if raw else None
        except ValueError:
            parsed = None
        if response.code >= 400:
            if not isinstance(parsed, dict) or "code" not in parsed:
                raise ConnectionFailed(f"{self.base_url} answered HTTP {response.code} without the API's error body")
            retry_after = response.headers.get("Retry-After")
            raise error_from_envelope(parsed, response.code, float(retry_after) if retry_after else None)
        if not isinstance(parsed, dict):
            raise ConnectionFailed(f"{self.base_url} answered something that is not the vachat API")
        return parsed if envelope else parsed.get("data")

    async def health(self) -> dict[str, Any]:
        """``GET /health``: the server's report (``status``, ``version``, ``environment`` …),
        whether it is healthy (200) or degraded (503)."""
        try:
            response = await self._http.fetch(f"{self.base_url}/health", raise_error=False,
                                              request_timeout=self.request_timeout)
        except (OSError, tornado.httpclient.HTTPClientError) as error:  # refused, or cut before an answer
            raise ConnectionFailed(f"Cannot reach {self.base_url}: {error}") from error
        try:
            report = _json_loads(response.body) if response.body else None
        except ValueError:
            report = None
        if response.code == 599:
            raise ConnectionFailed(f"Cannot reach {self.base_url}: {response.error}")
        if response.code not in (200, 503) or not isinstance(report, dict):
            raise ConnectionFailed(f"{self.base_url} has no vachat health report (HTTP {response.code})")
        return report

    # -- conversations ------------------------------------------------------------------------

    async def list_conversations(self, *, page: int = 1, limit: int = 20, sort_by: str | None = None,
                                 sort_order: str | None = None, search: str | None = None,
                                 archived: bool | None = None, tag: str | None = None) -> Page[Conversation]:
        body = await self.request("GET", "/api/chat/conversations", envelope=True, params={
            "page": page, "limit": limit, "sortBy": sort_by, "sortOrder": sort_order, "search": search,
            "archived": archived, "tag": tag})
        return _page(body, Conversation.from_wire)

    async def create_conversation(self, title: str = "New conversation", **fields: Any) -> Conversation:
        """``fields``: ``description``, ``isPublic``, ``isArchived``, ``tags``, ``metadata``."""
        return Conversation.from_wire(await self.request("POST", "/api/chat/conversations",
                                                         json={"title": title, **fields}))

    async def get_conversation(self, conversation_id: str) -> Conversation:
        return Conversation.from_wire(await self.request("GET", f"/api/chat/conversations/{conversation_id}"))

    async def update_conversation(self, conversation_id: str, **fields: Any) -> Conversation:
        """``fields`` on the wire's names: ``title``, ``isArchived``, ``currentMessageId`` …"""
        return Conversation.from_wire(await self.request("PUT", f"/api/chat/conversations/{conversation_id}",
                                                         json=fields))

    async def delete_conversation(self, conversation_id: str) -> None:
        await self.request("DELETE", f"/api/chat/conversations/{conversation_id}")

    # -- messages -------------------------------------------------------------------------------

    async def messages(self, conversation_id: str, *, before: str | None = None, after: str | None = None,
                       limit: int | None = None) -> MessagePage:
        """A page of messages, newest first: ``before`` the older ones, ``after`` the ones
        immediately newer than a message id."""
        data = await self.request("GET", f"/api/chat/conversations/{conversation_id}/messages",
                                  params={"before": before, "after": after, "limit": limit})
        return MessagePage([Message.from_wire(item) for item in data["items"]], data.get("nextCursor"))

    async def send_message(self, conversation_id: str, content: str, *, requires_ai_response: bool = False,
                           client_message_id: str | None = None, **fields: Any) -> Message:
        """``POST /api/chat/message``, retried while the server is unreachable: the
        ``clientMessageId`` (made here when not given) has the server store it once.
        ``fields`` on the wire's names: ``type``, ``files``, ``parentId``, ``metadata``."""
        body = {"conversationId": conversation_id, "content": content, "requiresAIResponse": requires_ai_response,
                "clientMessageId": client_message_id or new_client_message_id(), **fields}
        for attempt in range(SEND_RETRIES + 1):
            try:
                return Message.from_wire(await self.request("POST", "/api/chat/message", json=body))
            except ConnectionFailed:
                if attempt == SEND_RETRIES:
                    raise
                await asyncio.sleep(SEND_RETRY_DELAY * 2 ** attempt)
        raise AssertionError("unreachable")

    async def edit_message(self, message_id: str, content: str) -> Message:
        return Message.from_wire(await self.request("PUT", f"/api/chat/messages/{message_id}",
                                                    json={"content": content}))

    async def delete_message(self, message_id: str) -> None:
        await self.request("DELETE", f"/api/chat/messages/{message_id}")

    async def search(self, query: str, *, cursor: str | None = None, limit: int | None = None) -> MessagePage:
        """Whole words in my conversations' messages, best match first."""
        data = await self.request("GET", "/api/chat/search", params={"q": query, "cursor": cursor, "limit": limit})
        return MessagePage([Message.from_wire(item) for item in data["items"]], data.get("nextCursor"))

    # -- the assistant (the AI plugin) ----------------------------------------------------------

    async def regenerate(self, message_id: str) -> dict[str, Any]:
        """``POST /api/chat/messages/:id/regenerate``: start a new reply in place of the
        assistant reply ``message_id`` (kept as a sibling branch). Answers ``{conversationId,
        messageId, parentId, replaces}`` at once; the reply streams over the WebSocket
        (``LiveConnection.regenerate`` returns it as a ``ReplyStream``)."""
        return await self.request("POST", f"/api/chat/messages/{message_id}/regenerate")

    async def ai_usage(self) -> dict[str, Any]:
        """``GET /api/ai/usage``: ``{date, tier, used, limit}`` for today (UTC). ``NotFound``
        when the server has no assistant."""
        return await self.request("GET", "/api/ai/usage")

    # -- files (the files plugin) ------------------------------------------------------------------

    async def list_files(self, *, page: int = 1, limit: int = 20) -> Page[FileInfo]:
        body = await self.request("GET", "/api/files", envelope=True, params={"page": page, "limit": limit})
        return _page(body, FileInfo.from_wire)

    async def upload_file(self, path: str | os.PathLike[str] | None = None, *, content: bytes | None = None,
                          filename: str | None = None, content_type: str | None = None, purpose: str | None = None,
                          is_public: bool | None = None, description: str | None = None) -> FileInfo:
        """``POST /api/files/upload`` (multipart field ``file``): a file on disk, or ``content``
        with a ``filename``. The body is built in memory (uploads are capped by the server's
        MAX_FILE_SIZE, 10 MiB by default)."""
        if content is None:
            if path is None:
                raise ValueError("give a path or content")
            content = await asyncio.get_running_loop().run_in_executor(None, Path(path).read_bytes)
            filename = filename or Path(path).name
        filename = filename or "upload"
        content_type = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        fields = {"purpose": purpose, "isPublic": None if is_public is None else str(is_public).lower(),
                  "description": description}
        body, boundary = _multipart({k: v for k, v in fields.items() if v is not None}, filename, content_type,
                                    content)
        data = await self.request("POST", "/api/files/upload", body=body,
                                  headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return FileInfo.from_wire(data)

    async def download_file(self, file_id: str, destination: str | os.PathLike[str]) -> Path:
        """``GET /api/files/:id/download`` into ``destination`` (written as it arrives; removed
        again when the download fails)."""
        target = Path(destination)
        try:
            with open(target, "wb") as sink:
                await self.request("GET", f"/api/files/{file_id}/download", streaming_callback=sink.write,
                                   headers={"Accept": "*/*"})
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target

    async def get_file(self, file_id: str) -> FileInfo:
        return FileInfo.from_wire(await self.request("GET", f"/api/files/{file_id}"))

    async def delete_file(self, file_id: str) -> None:
        await self.request("DELETE", f"/api/files/{file_id}")

    # -- live ----------------------------------------------------------------------------------------

    def live(self, **options: Any) -> LiveConnection:
        """A ``LiveConnection`` over this client's credentials (``await live.connect()``)."""
        return LiveConnection(self, **options)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json_dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_loads(body: bytes) -> Any:
    return json.loads(body.decode("utf-8"))


def _page(body: dict[str, Any], make: Callable[[dict[str, Any]], Any]) -> Page[Any]:
    pagination = body.get("pagination") or {}
    items = [make(item) for item in body.get("data") or []]
    return Page(items, int(pagination.get("page", 1)), int(pagination.get("limit", len(items))),
                int(pagination.get("total", len(items))), int(pagination.get("totalPages", 1)))


def _multipart(fields: dict[str, str], filename: str, content_type: str, content: bytes) -> tuple[bytes, str]:
    boundary = f"vachat-{uuid.uuid4().hex}"
    quoted = filename.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
                 f"Content-Type: {content_type}\r\n\r\n".encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), boundary

