"""``vachat chat -m TEXT``: what a script sees (standard output, standard error, exit status),
run as a real process against the real server."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from . import fake_ai as client_fake_ai
from .helpers import TcpProxy

WITH_ASSISTANT = pytest.mark.vachat(plugins=["chat", ("fakeai", client_fake_ai)])
CHAT_ONLY = pytest.mark.vachat(plugins=["chat"])
# Seconds a `vachat chat -m` run may take (start-up included) before the test gives up on it.
RUN_TIMEOUT = 60


async def chat(url, *args, user=None, api_key=None, extra_env=None):
    """Run ``vachat chat --url URL ARGS`` with no terminal; returns (status, stdout, stderr)."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("VACHAT_API_KEY", "VACHAT_EMAIL", "VACHAT_PASSWORD")}
    if user is not None:
        env.update(VACHAT_EMAIL=user.email, VACHAT_PASSWORD=user.password)
    if api_key is not None:
        env["VACHAT_API_KEY"] = api_key
    env.update(extra_env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vachat", "chat", "--url", url, *args, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    return process.returncode, out.decode(), err.decode()


def url_of(http_port):
    return f"http://127.0.0.1:{http_port}"


async def messages_of(fetch, user, conversation_id):
    page = (await fetch(f"/api/chat/conversations/{conversation_id}/messages?limit=200", user=user)).data
    return list(reversed(page["items"]))


@pytest.mark.gen_test(timeout=120)
@WITH_ASSISTANT
async def test_one_shot_prints_the_streamed_reply_and_exits_0(production_http_server, http_port, fetch, make_user):
    user = await make_user()
    status, out, err = await chat(url_of(http_port), "-m", "hello there", user=user)
    assert (status, out, err) == (0, "Echo: hello there\n", "")
    # No conversation named: it used a new one, and goes on with the most recent next time.
    conversations = (await fetch("/api/chat/conversations", user=user)).data
    assert len(conversations) == 1
    status, out, _ = await chat(url_of(http_port), "-m", "again", user=user)
    assert (status, out) == (0, "Echo: again\n")
    stored = await messages_of(fetch, user, conversations[0]["id"])
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "hello there"), ("assistant", "Echo: hello there"), ("user", "again"), ("assistant", "Echo: again")]


@pytest.mark.gen_test(timeout=120)
@WITH_ASSISTANT
async def test_one_shot_json_is_one_event_per_line(production_http_server, http_port, fetch, make_user):
    user = await make_user()
    key = (await fetch("/api/auth/api-keys", method="POST", json={"name": "script"}, user=user)).data["key"]
    status, out, err = await chat(url_of(http_port), "-m", "one two three", "--json", "--conversation", "new",
                                  api_key=key)
    assert status == 0 and err == ""
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds[:2] == ["conversation", "message"] and kinds[-1] == "reply"
    assert set(kinds[2:-1]) == {"delta"} and len(kinds[2:-1]) == 4  # "Echo: ", "one ", "two ", "three"
    reply = events[-1]["message"]
    assert "".join(event["delta"] for event in events[2:-1]) == reply["content"] == "Echo: one two three"
    assert all(event["messageId"] == reply["id"] for event in events[2:-1])
    conversation = events[0]["conversation"]
    assert events[1]["message"]["conversationId"] == conversation["id"]
    stored = await messages_of(fetch, user, conversation["id"])
    assert [m["id"] for m in stored] == [events[1]["message"]["id"], reply["id"]]
    # --conversation ID continues that one.
    status, out, _ = await chat(url_of(http_port), "-m", "more", "--json", "--conversation", conversation["id"],
                                api_key=key)
    assert status == 0 and json.loads(out.splitlines()[0])["conversation"]["id"] == conversation["id"]


@pytest.mark.gen_test(timeout=120)
@CHAT_ONLY
async def test_one_shot_failures_say_why_and_exit_non_zero(production_http_server, http_port, fetch, make_user):
    user = await make_user()
    url = url_of(http_port)
    # No assistant on this server: the request is refused and nothing is stored.
    status, out, err = await chat(url, "-m", "hello?", "--conversation", "new", user=user)
    assert status == 1 and out == "" and "no AI plugin is enabled (CONFLICT)" in err
    conversation = (await fetch("/api/chat/conversations", user=user)).data[0]
    assert conversation["messageCount"] == 0
    status, out, err = await chat(url, "-m", "hello?", "--json", "--conversation", conversation["id"], user=user)
    lines = [json.loads(line) for line in out.splitlines()]
    assert status == 1 and lines[-1]["event"] == "error" and lines[-1]["code"] == "CONFLICT"
    assert "no AI plugin" in err
    # --no-reply only sends.
    status, out, err = await chat(url, "-m", "just a note", "--no-reply", "--conversation", conversation["id"],
                                  user=user)
    assert (status, out, err) == (0, "", "")
    assert [m["content"] for m in await messages_of(fetch, user, conversation["id"])] == ["just a note"]
    # Wrong password, unknown conversation, unreachable server.
    status, _, err = await chat(url, "-m", "x", extra_env={"VACHAT_EMAIL": user.email,
                                                           "VACHAT_PASSWORD": "Not-The-Password-1!"})
    assert status == 1 and "Invalid e-mail or password (UNAUTHORIZED)" in err
    status, _, err = await chat(url, "-m", "x", "--conversation", "nope", user=user)
    assert status == 1 and "(NOT_FOUND)" in err
    async with TcpProxy(http_port) as proxy:
        proxy.cut()
        status, _, err = await chat(proxy.url, "-m", "x", "--no-reply", user=user)
    assert status == 1 and "Cannot reach" in err
    # Bad arguments and missing credentials without a terminal to ask on: 2.
    status, _, err = await chat(url, "--json")
    assert status == 2 and "go with -m" in err
    status, _, err = await chat(url, "-m", "x")
    assert status == 2 and "no terminal" in err


@pytest.mark.gen_test(timeout=120)
@pytest.mark.vachat(plugins=["chat", ("fakeai", client_fake_ai)], config={"env": "development"})
async def test_one_shot_without_a_terminal_says_how_to_create_the_account(production_http_server, http_port, fetch):
    email = "nobody-yet@example.test"
    status, out, err = await chat(url_of(http_port), "-m", "hello", extra_env={"VACHAT_EMAIL": email,
                                                                             "VACHAT_PASSWORD": "Correct-Horse-9!"})
    assert status == 1 and out == ""
    assert f"if {email} has no account yet, create it by running `vachat chat --email {email}` on a terminal" in err
    refused = await fetch("/api/auth/login", method="POST", json={"email": email, "password": "Correct-Horse-9!"})
    assert refused.code == 401  # nothing was created
