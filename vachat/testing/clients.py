"""The clients of a test server: ``fetch`` (``Response``), ``ws_connect`` (``WsClient``) and the
helpers that read their answers."""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import tornado.httpclient
import tornado.websocket

from .support import DEFAULT_WAIT


@dataclass
class Response:
    code: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def data(self) -> Any:
        return self.json["data"]

    @property
    def auth_headers(self) -> dict[str, str]:
        """For the answer of a sign-in (``login``, register): its access token, so the response
        itself can be passed as ``user=``."""
        return {"Authorization": f"Bearer {self.data['tokens']['accessToken']}"}


def assert_error(response: Response, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is the error envelope with this status and code; return its body."""
    assert response.code == status, response.body
    body = response.json
    assert body["success"] is False and body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"], body
    assert response.headers["Content-Type"].startswith("application/json")
    return body


def error_fields(body: dict[str, Any]) -> dict[str, str]:
    """A validation error's ``details`` as ``{field: message}``."""
    return {detail["field"]: detail["message"] for detail in body.get("details") or []}


async def login(fetch: Callable[..., Any], email: str, password: str, **kwargs: Any) -> Response:
    """``POST /api/auth/login`` through ``fetch``: a new session for an existing user."""
    return await fetch("/api/auth/login", method="POST", json={"email": email, "password": password}, **kwargs)


def auth_headers_for(user: Any) -> dict[str, str]:
    if user is None:
        return {}
    if isinstance(user, str):
        return {"Authorization": f"Bearer test:{user}"}
    headers = getattr(user, "auth_headers", None)
    if headers is None and isinstance(user, dict):
        headers = user.get("auth_headers")
    if headers is None:
        raise TypeError(f"cannot authenticate as {user!r}: give a user id or an object with auth_headers")
    return dict(headers)


@pytest.fixture
def fetch(production_http_server: Any, base_url: str) -> Callable[..., Any]:
    """``await fetch(path, method="GET", json=None, body=None, headers=None, user=None)``."""
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)

    async def fetch(path: str, method: str = "GET", *, json: Any = None, body: bytes | str | None = None,
                    headers: dict[str, str] | None = None, user: Any = None, **kwargs: Any) -> Response:
        all_headers = auth_headers_for(user)
        if json is not None:
            body = _json_module.dumps(json)
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        request = tornado.httpclient.HTTPRequest(
            base_url + path, method=method, headers=all_headers, body=body,
            allow_nonstandard_methods=True, request_timeout=30, follow_redirects=False, **kwargs)
        response = await client.fetch(request, raise_error=False)
        if response.code == 599:
            raise response.error  # the connection failed: no HTTP answer to assert on
        return Response(response.code, response.headers, response.body or b"")

    yield fetch
    client.close()


_json_module = json


class WsClient:
    """A WebSocket client that keeps every frame, so a test can wait for the one it needs."""

    def __init__(self, connection: tornado.websocket.WebSocketClientConnection) -> None:
        self.connection = connection
        self.frames: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._ids = itertools.count(1)
        self._closed = False
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            message = await self.connection.read_message()
            if message is None:
                self._closed = True
                self._arrived.set()
                return
            self.frames.append(json.loads(message))
            self._arrived.set()

    def send(self, event_type: str, data: Any = None, id: Any = None) -> None:
        frame: dict[str, Any] = {"type": event_type}
        if data is not None:
            frame["data"] = data
        if id is not None:
            frame["id"] = id
        self.send_raw(json.dumps(frame))

    def send_raw(self, text: str | bytes) -> None:
        self.connection.write_message(text)

    async def receive(self, event_type: str | None = None, *, id: Any = None, timeout: float = DEFAULT_WAIT) -> dict[str, Any]:
        """The next unconsumed frame (of ``event_type`` / with ``id`` when given)."""

        def matches(frame: dict[str, Any]) -> bool:
            return (event_type is None or frame.get("type") == event_type) and (id is None or frame.get("id") == id)

        async def wait() -> dict[str, Any]:
            while True:
                for index, frame in enumerate(self.frames):
                    if matches(frame):
                        return self.frames.pop(index)
                if self._closed:
                    raise ConnectionError(f"socket closed ({self.close_code} {self.close_reason}) "
                                          f"before a {event_type or 'frame'} arrived")
                self._arrived.clear()
                await self._arrived.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def request(self, event_type: str, data: Any = None, *, timeout: float = DEFAULT_WAIT) -> dict[str, Any]:
        """Send with a fresh id and return the one reply (``ack``, ``error`` or ``pong``)."""
        request_id = f"r{next(self._ids)}"
        self.send(event_type, data, id=request_id)
        return await self.receive(id=request_id, timeout=timeout)

    async def closed(self, timeout: float = DEFAULT_WAIT) -> tuple[int | None, str | None]:
        """Wait for the server to close the socket; returns ``(code, reason)``."""
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code, self.close_reason

    @property
    def close_code(self) -> int | None:
        return self.connection.close_code

    @property
    def close_reason(self) -> str | None:
        return self.connection.close_reason

    def close(self) -> None:
        self.connection.close()
        self._reader.cancel()


async def open_websocket(url: str, headers: dict[str, str] | None = None) -> WsClient:
    request = tornado.httpclient.HTTPRequest(url, headers=headers or {}, request_timeout=DEFAULT_WAIT)
    connection = await tornado.websocket.websocket_connect(request)
    return WsClient(connection)


@pytest.fixture
def ws_connect(production_http_server: Any, http_port: int) -> Callable[..., Any]:
    """``await ws_connect(user=None, headers=None, path="/ws")`` → a connected ``WsClient``."""
    clients: list[WsClient] = []

    async def ws_connect(user: Any = None, headers: dict[str, str] | None = None, path: str = "/ws") -> WsClient:
        all_headers = auth_headers_for(user)
        all_headers.update(headers or {})
        client = await open_websocket(f"ws://127.0.0.1:{http_port}{path}", all_headers)
        clients.append(client)
        return client

    yield ws_connect
    for client in clients:
        client.close()
