"""Outgoing webhooks through the real server: managing them, what they hear, how deliveries are
signed (checked with the Standard Webhooks library, as a receiver would), retried, disabled,
refused for private targets, and claimed once."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from standardwebhooks import Webhook as Verifier

from vachat.testing import assert_error, error_fields, eventually

ALL_EVENTS = ["conversation.created", "conversation.updated", "conversation.deleted", "message.created",
              "message.updated", "message.deleted", "ai.reply.completed", "file.uploaded"]


def setup(**webhooks):
    """The plugins and the ``[plugins.webhooks]`` section of a test (loopback receivers allowed
    unless it says otherwise)."""
    section = {"allow_private": True, **webhooks}
    return pytest.mark.vachat(plugins=["webhooks", "chat", "files", "ai", "admin"],
                              config={"plugin_sections": {"webhooks": section}})


async def create(fetch, user, url, events=("message.created",), **fields):
    return await fetch("/api/webhooks", method="POST", user=user, json={"url": url, "events": list(events), **fields})


def verified(secret, request):
    """The delivery's JSON, once its signature checks out (raises otherwise)."""
    return Verifier(secret).verify(request.body, request.headers)


# ---------------------------------------------------------------------------
# managing webhooks
# ---------------------------------------------------------------------------


@setup()
@pytest.mark.gen_test
async def test_a_user_creates_lists_changes_and_deletes_their_webhooks(app, fetch, make_user, receiver):
    ada, bob = await make_user(), await make_user()
    response = await create(fetch, ada, receiver.url, ["message.created", "file.uploaded"], description="CI bot")
    assert response.code == 201, response.body
    created = app.schemas.validate("webhooks/webhook-created", response.json["data"])
    assert created["secret"].startswith("whsec_")
    assert (created["url"], created["events"], created["description"], created["isActive"]) == (
        receiver.url, ["message.created", "file.uploaded"], "CI bot", True)
    hook_id = created["id"]

    listed = (await fetch("/api/webhooks", user=ada)).json["data"]
    assert [w["id"] for w in listed] == [hook_id] and "secret" not in listed[0]  # shown once only
    assert "secret" not in (await fetch(f"/api/webhooks/{hook_id}", user=ada)).json["data"]
    assert (await fetch("/api/webhooks", user=bob)).json["data"] == []
    for method, body in (("GET", None), ("PATCH", {"description": "mine now"}), ("DELETE", None)):
        assert_error(await fetch(f"/api/webhooks/{hook_id}", method=method, json=body, user=bob), 404, "NOT_FOUND")

    changed = await fetch(f"/api/webhooks/{hook_id}", method="PATCH", user=ada,
                          json={"events": ["conversation.created"], "isActive": False})
    assert (changed.json["data"]["events"], changed.json["data"]["isActive"]) == (["conversation.created"], False)
    assert (await fetch(f"/api/webhooks/{hook_id}", method="DELETE", user=ada)).json["data"] == {"id": hook_id}
    assert_error(await fetch(f"/api/webhooks/{hook_id}", user=ada), 404, "NOT_FOUND")
    assert_error(await fetch("/api/webhooks"), 401, "UNAUTHORIZED")


@setup()
@pytest.mark.gen_test
async def test_bad_urls_and_events_are_400_on_their_field(app, fetch, make_user):
    ada = await make_user()
    for url in ("ftp://example.com/x", "not a url", "http://", "https://user:pw@example.com/hook"):
        response = await create(fetch, ada, url)
        assert error_fields(assert_error(response, 400, "VALIDATION_FAILED")).keys() == {"url"}, url
    for events in ([], ["message.exploded"], ["message.created", "message.created"]):
        response = await create(fetch, ada, "https://example.com/hook", events)
        fields = error_fields(assert_error(response, 400, "VALIDATION_FAILED"))
        assert [name.split(".")[0] for name in fields] == ["events"], (events, fields)


@setup(allow_private=False)
@pytest.mark.gen_test
async def test_targets_on_private_addresses_are_refused(app, fetch, make_user):
    ada = await make_user()
    for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]/hook", "http://10.1.2.3/",
                "http://192.168.0.10/", "http://169.254.169.254/latest/meta-data", "http://[::ffff:127.0.0.1]/",
                "http://0.0.0.0/"):
        response = await create(fetch, ada, url)
        fields = error_fields(assert_error(response, 400, "VALIDATION_FAILED"))
        assert "non-public address" in fields["url"], (url, fields)


@setup(allow_private=False)
@pytest.mark.gen_test
async def test_a_name_that_later_resolves_to_a_private_address_is_refused_at_delivery(
        app, fetch, make_user, receiver, monkeypatch):
    """DNS rebinding: public when the webhook was made, loopback when a delivery is due."""
    answers = {"rebind.example": "93.184.216.34"}
    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    ada = await make_user()
    hook = (await create(fetch, ada, f"http://rebind.example:{receiver.port}/hook", ["conversation.created"])).json["data"]
    answers["rebind.example"] = "127.0.0.1"
    await fetch("/api/chat/conversations", method="POST", json={"title": "hello"}, user=ada)

    async def attempted():
        page = (await fetch(f"/api/webhooks/{hook['id']}/deliveries", user=ada)).json["data"]
        return page and page[0]["attempts"] >= 1 and page[0]
    delivery = await eventually(attempted, what="the first attempt")
    assert "non-public address" in delivery["lastError"] and delivery["lastStatusCode"] is None
    assert receiver.requests == []  # nothing reached loopback


@setup()
@pytest.mark.gen_test
async def test_a_delivery_connects_to_the_very_address_it_checked(app, fetch, make_user, receiver, monkeypatch):
    """A name whose answers change between two lookups (the receiver's address, then another):
    a delivery that checked one answer and let the HTTP client look the name up again would
    connect wherever the second answer points, past the check. Each delivery looks it up once,
    and connects there."""
    lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def alternating_getaddrinfo(host, port, *args, **kwargs):
        if host != "alternating.example":
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(host)
        # odd lookups: the receiver; even ones: a loopback address nothing listens on
        address = "127.0.0.1" if len(lookups) % 2 else "127.0.0.2"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", alternating_getaddrinfo)
    ada = await make_user()
    response = await create(fetch, ada, f"http://alternating.example:{receiver.port}/hook", ["conversation.created"])
    assert response.code == 201, response.body
    assert len(lookups) == 1  # the check at creation
    lookups.clear()
    await fetch("/api/chat/conversations", method="POST", json={"title": "hello"}, user=ada)

    delivered = await receiver.wait_for(1)
    assert len(lookups) == 1
    assert delivered[0].headers["host"] == f"alternating.example:{receiver.port}"


# ---------------------------------------------------------------------------
# what is delivered
# ---------------------------------------------------------------------------


@setup()
@pytest.mark.gen_test
async def test_events_of_my_conversations_and_files_arrive_signed(app, fetch, make_user, receiver):
    ada, bob = await make_user(), await make_user()
    hook = (await create(fetch, ada, receiver.url, ALL_EVENTS)).json["data"]
    await create(fetch, bob, receiver.url + "?bob", ["message.created"])  # bob's hears only bob's

    conversation = (await fetch("/api/chat/conversations", method="POST", json={"title": "Plans"}, user=ada)).json["data"]
    await fetch(f"/api/chat/conversations/{conversation['id']}", method="PUT", json={"title": "Plans v2"}, user=ada)
    sent = await fetch("/api/chat/message", method="POST", user=ada,
                       json={"conversationId": conversation["id"], "content": "hello", "requiresAIResponse": True})
    assert sent.code in (200, 201), sent.body
    message = sent.json["data"]
    boundary = "hookboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
            f"Content-Type: text/plain\r\n\r\nsome text\r\n--{boundary}--\r\n").encode()
    uploaded = await fetch("/api/files/upload", method="POST", body=body, user=ada,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert uploaded.code == 201

    def types_received():
        return sorted(verified(hook["secret"], r)["type"] for r in receiver.requests)
    expected = sorted(["conversation.created", "conversation.updated", "message.created", "message.created",
                       "ai.reply.completed", "file.uploaded"])
    await eventually(lambda: types_received() == expected, timeout=10, what=f"{expected}, got {types_received()}")

    events = {(e := verified(hook["secret"], r))["type"] + ("" if e["type"] != "message.created" else e["data"]["role"]): e
              for r in receiver.requests}
    assert events["message.createduser"]["data"]["id"] == message["id"]
    assert events["message.createdassistant"]["data"]["role"] == "assistant"
    assert events["ai.reply.completed"]["data"]["metadata"]["finishReason"] == "stop"
    assert events["conversation.updated"]["data"]["title"] == "Plans v2"
    assert events["file.uploaded"]["data"]["id"] == uploaded.json["data"]["id"]
    assert all(r.headers["webhook-id"].isalnum() and r.headers["content-type"] == "application/json"
               for r in receiver.requests)
    # Tampering breaks the signature.
    first = receiver.requests[0]
    with pytest.raises(Exception):
        Verifier(hook["secret"]).verify(first.body.replace(b"Plans", b"Plots"), first.headers)

    # A delivery is recorded once the dispatcher has read the receiver's answer: a moment
    # after the receiver has the request.
    async def all_recorded_delivered():
        page = (await fetch(f"/api/webhooks/{hook['id']}/deliveries", user=ada)).json
        done = page["pagination"]["total"] == 6 and {d["status"] for d in page["data"]} == {"delivered"}
        return page if done else None
    deliveries = await eventually(all_recorded_delivered, timeout=10, what="six deliveries recorded as delivered")
    app.schemas.validate("webhooks/delivery-list", deliveries["data"])

    await fetch(f"/api/chat/conversations/{conversation['id']}", method="DELETE", user=ada)
    await receiver.wait_for(7)
    assert verified(hook["secret"], receiver.requests[6])["type"] == "conversation.deleted"


@setup()
@pytest.mark.gen_test
async def test_the_test_endpoint_delivers_a_webhook_test_event(app, fetch, make_user, receiver):
    ada = await make_user()
    hook = (await create(fetch, ada, receiver.url, ["file.uploaded"])).json["data"]
    response = await fetch(f"/api/webhooks/{hook['id']}/test", method="POST", user=ada)
    assert response.code == 202 and response.json["data"]["eventType"] == "webhook.test"
    [request] = await receiver.wait_for(1)
    event = verified(hook["secret"], request)
    assert (event["type"], event["data"]["webhookId"]) == ("webhook.test", hook["id"])
    assert request.headers["webhook-id"] == response.json["data"]["id"]


# ---------------------------------------------------------------------------
# failures
# ---------------------------------------------------------------------------


@setup(retry_schedule="0.1,0.1,0.1")
@pytest.mark.gen_test
async def test_failures_are_retried_with_the_same_webhook_id(app, fetch, make_user, receiver):
    ada = await make_user()
    hook = (await create(fetch, ada, receiver.url, ["conversation.created"])).json["data"]
    receiver.script = [500, 503]
    await fetch("/api/chat/conversations", method="POST", json={"title": "retry me"}, user=ada)
    requests = await receiver.wait_for(3)
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert all(verified(hook["secret"], r)["data"]["title"] == "retry me" for r in requests)

    async def delivered():
        deliveries = (await fetch(f"/api/webhooks/{hook['id']}/deliveries", user=ada)).json["data"]
        return deliveries and deliveries[0]["status"] == "delivered" and deliveries[0]
    delivery = await eventually(delivered, what="the delivery to be recorded")
    assert (delivery["attempts"], delivery["lastStatusCode"], delivery["nextAttemptAt"]) == (3, 200, None)


@setup(retry_schedule="0.05")
@pytest.mark.gen_test
async def test_redirects_are_not_followed_and_a_delivery_fails_after_its_schedule(app, fetch, make_user, receiver):
    ada = await make_user()
    hook = (await create(fetch, ada, receiver.url, ["conversation.created"])).json["data"]
    receiver.script = [302, 302]
    await fetch("/api/chat/conversations", method="POST", json={"title": "bounce"}, user=ada)

    async def failed():
        # Queued in the background: the list may still be empty the first time.
        deliveries = (await fetch(f"/api/webhooks/{hook['id']}/deliveries", user=ada)).json["data"]
        return deliveries and deliveries[0]["status"] == "failed" and deliveries[0]
    delivery = await eventually(failed, what="the delivery to fail")
    assert (delivery["attempts"], delivery["lastStatusCode"]) == (2, 302)
    assert [r for r in receiver.requests if r.headers.get("webhook-id")] == receiver.requests
    assert len(receiver.requests) == 2  # never to the Location


@setup(retry_schedule="0.05,0.05,0.05,0.05,0.05,0.05,0.05,0.05,0.05,0.05", disable_after=0.2)
@pytest.mark.gen_test
async def test_a_webhook_failing_too_long_is_disabled_and_its_owner_told(app, fetch, make_user, receiver):
    ada = await make_user()
    hook = (await create(fetch, ada, receiver.url, ["conversation.created"])).json["data"]
    receiver.script = [500] * 100
    await fetch("/api/chat/conversations", method="POST", json={"title": "doomed"}, user=ada)

    async def disabled():
        return not (await fetch(f"/api/webhooks/{hook['id']}", user=ada)).json["data"]["isActive"]
    await eventually(disabled, timeout=10, what="the webhook to be disabled")
    current = (await fetch(f"/api/webhooks/{hook['id']}", user=ada)).json["data"]
    assert current["disabledReason"].startswith("Disabled after failing")
    mail = await app.mailer.outbox.receive(to=ada.email)
    assert "disabled" in mail.subject and hook["id"] in mail.text
    [delivery] = (await fetch(f"/api/webhooks/{hook['id']}/deliveries", user=ada)).json["data"]
    assert delivery["status"] == "failed"
    # The receiver's 5,000-byte answer was kept to 1 KiB.
    assert await app.db.run(lambda: max(len(d.last_response or "") for d in _deliveries())) <= 1024

    # Turned back on, it hears new events again.
    receiver.script = []
    await fetch(f"/api/webhooks/{hook['id']}", method="PATCH", json={"isActive": True}, user=ada)
    await fetch("/api/chat/conversations", method="POST", json={"title": "revived"}, user=ada)
    await eventually(lambda: any(json.loads(r.body)["data"]["title"] == "revived" for r in receiver.requests),
                     what="the revived webhook's delivery")


def _deliveries():
    from plugins.webhooks.models import Delivery
    return list(Delivery.select())


# ---------------------------------------------------------------------------
# several nodes, the account, the dashboard
# ---------------------------------------------------------------------------


@setup()
@pytest.mark.gen_test
async def test_two_dispatchers_on_one_database_send_each_delivery_once(app, fetch, make_user, receiver):
    """A second dispatcher on the same database stands for another node: claims never overlap."""
    from plugins.webhooks.dispatcher import Dispatcher

    other_node = Dispatcher(app)
    other_node.start()
    try:
        ada = await make_user()
        await create(fetch, ada, receiver.url, ["conversation.created"])
        await asyncio.gather(*(fetch("/api/chat/conversations", method="POST", json={"title": f"c{n}"}, user=ada)
                               for n in range(40)))
        await receiver.wait_for(40)
        await asyncio.sleep(0)  # let a duplicate, if any, be counted before the check below
        ids = [r.headers["webhook-id"] for r in receiver.requests]
        assert len(ids) == len(set(ids)) == 40
    finally:
        await other_node.stop()


@setup()
@pytest.mark.gen_test
async def test_deleting_an_account_removes_its_webhooks_and_the_export_lists_them(app, fetch, make_user, receiver):
    import io
    import zipfile

    ada = await make_user()
    hook = (await create(fetch, ada, receiver.url, ["conversation.created"])).json["data"]
    archive = zipfile.ZipFile(io.BytesIO((await fetch("/api/users/me/export", user=ada)).body))
    exported = json.loads(archive.read("webhooks.json"))
    assert [w["id"] for w in exported] == [hook["id"]] and "secret" not in exported[0]
    assert hook["secret"] not in archive.read("webhooks.json").decode()

    await app.accounts.delete_user(ada.id)
    assert await app.db.run(_deliveries) == []
    assert await app.service("webhooks").of_owner(ada.id) == []


@setup()
@pytest.mark.gen_test
async def test_the_dashboard_counts_deliveries(app, fetch, make_user, admin_user, receiver):
    ada = await make_user()
    await create(fetch, ada, receiver.url, ["conversation.created"])
    receiver.script = [200]
    await fetch("/api/chat/conversations", method="POST", json={"title": "counted"}, user=ada)
    await receiver.wait_for(1)

    async def counted():
        figures = (await fetch("/api/admin/dashboard", user=admin_user)).json["data"]
        return figures.get("webhooks", {}).get("delivered") == 1 and figures
    figures = await eventually(counted, what="the dashboard to count the delivery")
    assert figures["webhooks"]["failed"] == 0 and "webhooks" not in figures["missing"]


@setup()
@pytest.mark.gen_test
async def test_queued_deliveries_survive_a_restart(app, fetch, make_user, receiver):
    """Events queued while no dispatcher runs (the node went down) are sent by the next one."""
    from plugins.webhooks.dispatcher import Dispatcher

    await app.plugin_state("webhooks").dispatcher.stop()  # the node "stops"
    ada = await make_user()
    await create(fetch, ada, receiver.url, ["conversation.created"])
    await fetch("/api/chat/conversations", method="POST", json={"title": "while down"}, user=ada)
    await eventually(lambda: app.db.run(lambda: len(_deliveries()) == 1), what="the delivery to be queued")
    assert receiver.requests == []

    restarted = Dispatcher(app)
    restarted.start()
    try:
        [request] = await receiver.wait_for(1)
        assert json.loads(request.body)["data"]["title"] == "while down"
    finally:
        await restarted.stop()


@setup(timeout=3)
@pytest.mark.gen_test
async def test_a_receiver_that_hangs_does_not_delay_another(app, fetch, make_user, receiver):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections, never answers
    try:
        ada, bob = await make_user(), await make_user()
        await create(fetch, ada, f"http://127.0.0.1:{silent.getsockname()[1]}/hook", ["conversation.created"])
        await create(fetch, bob, receiver.url, ["conversation.created"])
        await fetch("/api/chat/conversations", method="POST", json={"title": "ada's"}, user=ada)
        await fetch("/api/chat/conversations", method="POST", json={"title": "bob's"}, user=bob)
        [request] = await receiver.wait_for(1, timeout=2)  # well before ada's attempt times out
        assert json.loads(request.body)["data"]["title"] == "bob's"
    finally:
        silent.close()
