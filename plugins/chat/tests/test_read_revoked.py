"""A socket stops hearing another's private conversation as soon as its user may no longer read
it: their role changed, or their role lost ``conversations.read_all``. The change re-checks the
rooms every socket of theirs joined, on every node, and takes it out of those it may no longer
read (as making a conversation private does); its own and public conversations stay joined."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from vachat.testing import assert_error, eventually, needs_shared_services, open_websocket

READ_ALL = ["conversations.read_all"]
WITH_ADMIN = pytest.mark.vachat(plugins=["chat", "admin"])


async def _create(fetch, owner, public: bool) -> str:
    response = await fetch("/api/chat/conversations", method="POST", user=owner,
                           json={"title": "public" if public else "private", "isPublic": public})
    assert response.code == 201, response.body
    return response.data["id"]


async def _post(fetch, owner, conversation_id: str, content: str) -> None:
    response = await fetch("/api/chat/message", method="POST", user=owner,
                           json={"conversationId": conversation_id, "content": content})
    assert response.code == 201, response.body


async def _join(socket, conversation_id: str) -> None:
    reply = await socket.request("join-conversation", {"conversationId": conversation_id}, timeout=10)
    assert reply["type"] == "ack", reply


async def _next_message(socket) -> dict:
    return (await socket.receive("new-message", timeout=10))["data"]


async def _role_id(fetch, admin_user, name: str) -> str:
    roles = (await fetch("/api/admin/roles", user=admin_user)).data
    return next(role["id"] for role in roles if role["name"] == name)


@WITH_ADMIN
@pytest.mark.gen_test
async def test_losing_read_all_takes_the_socket_out_of_private_rooms(fetch, ws_connect, make_user, admin_user):
    owner = await make_user()
    moved = await make_user(role="auditors", permissions=READ_ALL)  # will be given another role
    emptied = await make_user(role="reviewers", permissions=READ_ALL)  # their role will lose it
    private, public = await _create(fetch, owner, public=False), await _create(fetch, owner, public=True)
    own = await _create(fetch, moved, public=False)
    sockets = {}
    for reader in (moved, emptied):
        socket = sockets[reader.id] = await ws_connect(user=reader)
        await socket.receive("ready")
        await _join(socket, private)
        await _join(socket, public)
    await _join(sockets[moved.id], own)
    await _post(fetch, owner, private, "before")
    for socket in sockets.values():
        assert (await _next_message(socket))["content"] == "before"

    assert (await fetch(f"/api/admin/users/{moved.id}", method="PUT", user=admin_user, json={"role": "user"})).code == 200
    reviewers = await _role_id(fetch, admin_user, "reviewers")
    assert (await fetch(f"/api/admin/roles/{reviewers}", method="PUT", user=admin_user,
                        json={"permissions": []})).code == 200

    await _post(fetch, owner, private, "after")
    await _post(fetch, owner, public, "sentinel")  # published after "after": arrives after it
    for socket in sockets.values():
        assert (await _next_message(socket))["content"] == "sentinel"
    # Their own conversation's room is kept.
    await _post(fetch, moved, own, "mine")
    assert (await _next_message(sockets[moved.id]))["content"] == "mine"
    for reader in (moved, emptied):
        assert_error(await fetch(f"/api/chat/conversations/{private}", user=reader), 404, "NOT_FOUND")
        refused = await sockets[reader.id].request("join-conversation", {"conversationId": private})
        assert (refused["type"], refused["data"]["code"]) == ("error", "NOT_FOUND")


@needs_shared_services
@pytest.mark.gen_test(timeout=120)
async def test_losing_read_all_on_one_node_takes_the_socket_out_on_another(server_process, make_user, admin_user):
    env = {"VACHAT_PLUGINS": "chat,admin"}
    first, second = server_process(env), server_process(env)
    await asyncio.gather(first.wait_ready(), second.wait_ready())
    owner = await make_user()
    reader = await make_user(role="auditors", permissions=READ_ALL)

    async def create(public: bool) -> str:
        response = await first.fetch("/api/chat/conversations", method="POST", headers=owner.auth_headers,
                                     json={"title": "t", "isPublic": public})
        assert response.code == 201, response.body
        return response.data["id"]

    async def post(conversation_id: str, content: str) -> None:
        response = await first.fetch("/api/chat/message", method="POST", headers=owner.auth_headers,
                                     json={"conversationId": conversation_id, "content": content})
        assert response.code == 201, response.body

    private, public = await create(public=False), await create(public=True)
    socket = await open_websocket(second.ws_url, reader.auth_headers)
    await socket.receive("ready")
    await _join(socket, private)
    await _join(socket, public)
    await post(private, "before")
    assert (await _next_message(socket))["content"] == "before"

    changed = await first.fetch(f"/api/admin/users/{reader.id}", method="PUT", headers=admin_user.auth_headers,
                                json={"role": "user"})
    assert changed.code == 200, changed.body
    # The second node hears of the change through the broker: no frame says when, so probe.
    # Each probe posts to the private room, then the public one; the socket is out once the
    # public message arrives with no private one before it.
    probes = itertools.count()

    async def out_of_the_private_room() -> bool:
        number = next(probes)
        await post(private, f"probe {number}")
        await post(public, f"sentinel {number}")
        heard: list[dict[str, Any]] = []
        while not heard or heard[-1]["content"] != f"sentinel {number}":
            heard.append(await _next_message(socket))
        return all(message["conversationId"] == public for message in heard)

    await eventually(out_of_the_private_room, timeout=10, what="the socket to leave the private room")
    assert await out_of_the_private_room()  # and it stays out
    assert (await second.fetch(f"/api/chat/conversations/{private}", headers=reader.auth_headers)).code == 404
