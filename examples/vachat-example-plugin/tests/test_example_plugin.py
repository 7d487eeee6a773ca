"""The example plugin's own tests. They use the fixtures vachat ships for plugin authors
(``app``, ``fetch``, ``ws_connect``), which pytest loads from the installed vachat package."""

import pytest

WRITER = {"Authorization": "Bearer test:alice", "X-Test-Permissions": "example.write"}


@pytest.mark.gen_test
async def test_hello_uses_the_configured_greeting(fetch):
    response = await fetch("/api/example/hello", user="bob")
    assert response.json == {"success": True, "data": {"greeting": "Hello, Bob!"}}


@pytest.mark.gen_test
async def test_notes_are_validated_owned_and_pushed(fetch, ws_connect):
    invalid = await fetch("/api/example/notes", method="POST", json={"text": ""}, headers=WRITER)
    assert invalid.code == 400 and invalid.json["details"][0]["field"] == "text"
    socket = await ws_connect(user="alice")
    created = await fetch("/api/example/notes", method="POST", json={"text": "buy milk"}, headers=WRITER)
    assert created.code == 201
    assert (await socket.receive("example-note-created"))["data"]["text"] == "buy milk"
    assert [n["text"] for n in (await fetch("/api/example/notes", user="alice")).json["data"]] == ["buy milk"]


@pytest.mark.gen_test
async def test_echo_and_rooms(ws_connect):
    alice = await ws_connect(headers=WRITER)
    bob = await ws_connect(user="bob")
    assert (await alice.request("example-echo", {"text": "hi"}))["data"] == {"text": "hi", "greeting": "Hello"}
    bad = await alice.request("example-echo", {"text": 5})
    assert bad["type"] == "error" and bad["data"]["code"] == "VALIDATION_FAILED"
    not_joined = await alice.request("example-shout", {"room": "tea", "text": "x"})
    assert not_joined["data"]["code"] == "FORBIDDEN"
    for socket in (alice, bob):
        assert (await socket.request("example-join", {"room": "tea"}))["type"] == "ack"
    assert (await bob.request("example-shout", {"room": "tea"}))["data"]["code"] == "FORBIDDEN"  # no permission
    assert (await alice.request("example-shout", {"room": "tea", "text": "brewing"}))["type"] == "ack"
    assert (await bob.receive("example-shouted"))["data"] == {"room": "tea", "text": "brewing", "from": "alice"}


@pytest.mark.gen_test
async def test_a_signed_up_user_may_write_notes(fetch, make_user):
    """``Permission("example.write", grant_to=("user",))``: the built-in user role has it."""
    user = await make_user()
    created = await fetch("/api/example/notes", method="POST", json={"text": "mine"}, user=user)
    assert created.code == 201 and created.json["data"]["ownerId"] == user.id
