"""The AsyncAPI document of /ws: valid AsyncAPI 3.0, complete, and true to what the server sends.

``data/asyncapi-3.0.0.schema.json`` is ``schemas/3.0.0-without-$id.json`` of the npm package
``@asyncapi/specs`` 6.11.1 (the AsyncAPI initiative's own JSON Schema of the 3.0.0 document;
Python parsers of AsyncAPI lag behind), minified.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from vachat.ws import CLOSE_CODES

ASYNCAPI_SCHEMA = Path(__file__).parent / "data" / "asyncapi-3.0.0.schema.json"
WITH_CHAT_AND_AI = pytest.mark.vachat(plugins=["chat", "ai"], config={"plugin_sections": {"ai": {"echo_delay": 0}}})


def frame_validator(document: dict, key: str) -> jsonschema.Validator:
    """Validates a whole frame against the document's message ``key``."""
    registry = Registry().with_resource("urn:vachat:asyncapi", Resource(document, specification=DRAFT202012))
    schema = {"$ref": f"urn:vachat:asyncapi#/components/messages/{key}/payload"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


@WITH_CHAT_AND_AI
@pytest.mark.gen_test
async def test_the_document_is_valid_asyncapi_3(app, fetch):
    response = await fetch("/api/asyncapi.json")
    assert response.code == 200
    document = response.json
    specification = json.loads(ASYNCAPI_SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(specification).iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
    assert document["asyncapi"] == "3.0.0" and document["channels"]["socket"]["address"] == "/ws"
    assert document["servers"]["this"]["host"] == response.headers.get("Host", document["servers"]["this"]["host"])


@WITH_CHAT_AND_AI
@pytest.mark.gen_test
async def test_every_event_error_and_close_code_is_in_it(app, fetch):
    document = (await fetch("/api/asyncapi.json")).json
    messages = document["components"]["messages"]
    assert {spec.type for spec in app.events} == {m["name"] for k, m in messages.items() if k.startswith("client.")}
    assert {event.type for event in app.server_events} == {m["name"] for k, m in messages.items() if k.startswith("server.")}
    for expected in ("auth", "ping", "join-conversation", "send-message", "stop-generation"):
        assert document["operations"][f"client.{expected}"]["action"] == "receive"
    for expected in ("ready", "ack", "error", "new-message", "ai-delta", "ai-done", "user-typing"):
        assert document["operations"][f"server.{expected}"]["action"] == "send"
    codes = document["components"]["schemas"]["core.ws.error"]["properties"]["code"]["enum"]
    assert {"VALIDATION_FAILED", "UNAUTHORIZED", "RATE_LIMITED", "UNKNOWN_EVENT", "UNAVAILABLE"} <= set(codes)
    assert document["x-close-codes"] == {str(code): meaning for code, meaning in CLOSE_CODES.items()}
    # The schema a client event is validated with is the one the document shows.
    join = messages["client.join-conversation"]["payload"]["properties"]["data"]["$ref"]
    assert join == "#/components/schemas/chat.join"


@WITH_CHAT_AND_AI
@pytest.mark.gen_test
async def test_the_frames_a_conversation_produces_match_the_document(app, fetch, ws_connect, make_user):
    document = (await fetch("/api/asyncapi.json")).json
    ada = await make_user()
    socket = await ws_connect(user=ada)
    frames = [await socket.receive("ready")]
    conversation = (await fetch("/api/chat/conversations", method="POST", json={"title": "t"}, user=ada)).json["data"]
    frames.append(await socket.request("join-conversation", {"conversationId": conversation["id"]}))
    frames.append(await socket.request("typing-start", {"conversationId": conversation["id"]}))
    frames.append(await socket.request("send-message", {"conversationId": conversation["id"], "content": "hello",
                                                        "requiresAIResponse": True}))
    frames.append(await socket.request("ping"))
    frames.append(await socket.request("leave-conversation", {"conversationId": "nope"}))  # an error frame
    frames.append(await socket.receive("ai-done"))
    frames.extend(socket.frames)  # everything else the room and the owner got meanwhile
    socket.frames.clear()
    seen = set()
    for frame in frames:
        key = f"server.{frame['type']}"
        assert key in document["components"]["messages"], f"{frame['type']} is sent but not documented"
        frame_validator(document, key).validate(frame)
        seen.add(frame["type"])
    assert {"ready", "ack", "error", "pong", "new-message", "ai-typing", "ai-delta", "ai-done",
            "conversation-created"} <= seen, seen
    # The check has teeth: a frame that drifts from its schema fails it.
    with pytest.raises(jsonschema.ValidationError):
        frame_validator(document, "server.ai-delta").validate({"type": "ai-delta", "data": {"conversationId": 1}})


@pytest.mark.gen_test
async def test_the_docs_page_links_it_and_works_offline(app, fetch):
    page = await fetch("/api/docs")
    assert page.code == 200 and page.headers["Content-Type"].startswith("text/html")
    html = page.body.decode()
    assert "/api/asyncapi.json" in html and "/api/openapi.json" in html
    # Everything it loads comes from this server: no scheme-qualified URL in a src or href.
    assert "src=\"http" not in html and "href=\"http" not in html
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "unsafe-eval" not in policy
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "init.js"):
        response = await fetch(f"/api/docs/assets/{asset}")
        assert response.code == 200, asset
        assert b"validator.swagger.io" not in response.body or asset != "init.js"
    assert b"validatorUrl: null" in (await fetch("/api/docs/assets/init.js")).body
    for refused in ("../__init__.py", "swagger-ui.js.map", "docs.html", "%2e%2e/app.py"):
        assert (await fetch(f"/api/docs/assets/{refused}")).code == 404, refused
    # The API itself keeps its strict policy.
    assert (await fetch("/api/openapi.json")).headers["Content-Security-Policy"].startswith("default-src 'none'")
