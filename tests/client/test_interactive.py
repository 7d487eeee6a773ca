"""The interactive ``vachat chat`` driven through a pseudo-terminal (pexpect): signing in at a
password prompt (and creating the account on a development server), sending, a reply streamed
token by token, ``/stop``, ``/search``, ``/new``, ``/list``, ``/quit``; and a server restart
in the middle of a conversation that loses nothing typed or sent.

pexpect waits block, so each step runs in a thread while the test's IOLoop serves the
in-process server (``step``)."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import pexpect
import pytest

from vachat.testing import ServerProcess, eventually

from . import fake_ai as client_fake_ai

# Seconds one expected piece of screen output may take to appear.
SCREEN_WAIT = 20
# prompt_toolkit asks the terminal where the cursor is (ESC [6n) and waits for the answer;
# the test answers as a terminal would, from a row near the top.
CURSOR_QUERY = re.compile(r"\x1b\[6n")
CURSOR_ANSWER = "\x1b[5;1R"
PASSWORD = "Correct-Horse-9!"


class Terminal:
    """``vachat chat`` on a pseudo-terminal."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        environment = {key: value for key, value in os.environ.items()
                       if key not in ("VACHAT_API_KEY", "VACHAT_EMAIL", "VACHAT_PASSWORD", "PROMPT_TOOLKIT_NO_CPR")}
        environment.update(TERM="xterm", **(env or {}))
        self.child = pexpect.spawn(sys.executable, ["-m", "vachat", "chat", *args], env=environment,
                                   encoding="utf-8", timeout=SCREEN_WAIT, dimensions=(40, 160))

    def expect(self, pattern: str) -> None:
        while self.child.expect([CURSOR_QUERY, pattern]) == 0:
            self.child.send(CURSOR_ANSWER)

    def expect_all(self, *patterns: str) -> None:
        """Each of ``patterns`` appears, in any order (one screen update may draw several)."""
        waiting = list(patterns)
        while waiting:
            index = self.child.expect([CURSOR_QUERY, *waiting])
            if index == 0:
                self.child.send(CURSOR_ANSWER)
            else:
                waiting.pop(index - 1)

    def type(self, text: str) -> None:
        self.child.send(text)

    def line(self, text: str) -> None:
        self.child.send(text + "\r")

    def exit_status(self) -> int:
        while self.child.expect([CURSOR_QUERY, pexpect.EOF]) == 0:
            self.child.send(CURSOR_ANSWER)
        self.child.close()
        return self.child.exitstatus

    def close(self) -> None:
        self.child.close(force=True)


async def step(function, *args):
    """Run a blocking pexpect call in a thread, so the in-process server keeps serving."""
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


async def stored_somewhere(fetch, user, content, timeout=SCREEN_WAIT):
    """Wait until one of the user's conversations holds a message ``content`` (sends run in
    the background of the terminal, so the prompt comes back before the server has it)."""
    async def stored():
        found = (await fetch(f"/api/chat/search?q={content.split()[-1]}", user=user)).data["items"]
        return any(message["content"] == content for message in found)

    await eventually(stored, timeout, f"{content!r} to be stored")


async def messages_of(fetch, user, conversation_id):
    page = (await fetch(f"/api/chat/conversations/{conversation_id}/messages?limit=200", user=user)).data
    return list(reversed(page["items"]))


@pytest.mark.gen_test(timeout=180)
@pytest.mark.vachat(plugins=["chat", ("fakeai", client_fake_ai)], config={"env": "development"})
async def test_chat_in_a_terminal(production_http_server, http_port, fetch):
    email = "terminal@example.test"
    terminal = Terminal("--url", f"http://127.0.0.1:{http_port}", "--email", email)
    try:
        # No such account on this development server: the client offers to create it.
        await step(terminal.expect, "Password:")
        terminal.line(PASSWORD)
        await step(terminal.expect, r"Create this account on this development server\? \[y/N\]")
        terminal.line("y")
        await step(terminal.expect, f"Account {email} created")
        await step(terminal.expect, "Type a message")
        signed_in = await fetch("/api/auth/login", method="POST", json={"email": email, "password": PASSWORD})
        conversation = (await fetch("/api/chat/conversations", user=signed_in)).data[0]

        terminal.line("hello assistant")
        await step(terminal.expect, "assistant: Echo: hello assistant")

        # A slow reply: its first words are on the screen while the rest is being generated.
        terminal.line("[slow] tell me a long story about the sea")
        await step(terminal.expect_all, "assistant is typing", "assistant: Echo:")
        stored = await messages_of(fetch, signed_in, conversation["id"])
        assert [m["content"] for m in stored][-1] == "[slow] tell me a long story about the sea"  # not done yet
        terminal.line("/stop")
        await step(terminal.expect, r"\(stopped\)")
        await step(terminal.expect, r"assistant: Echo: [^\r\n]*\r")
        stored = await messages_of(fetch, signed_in, conversation["id"])
        assert stored[-1]["role"] == "assistant" and stored[-1]["metadata"]["finishReason"] == "cancelled"
        assert len(stored[-1]["content"]) < len("Echo: [slow] tell me a long story about the sea")

        terminal.line("/search story")
        await step(terminal.expect, r"\[" + conversation["id"] + r"\] you: \[slow\] tell me a long story")
        terminal.line("/new Second thoughts")
        await step(terminal.expect, "— Second thoughts")
        terminal.line("/list")
        await step(terminal.expect, r"\*  1\. Second thoughts")
        await step(terminal.expect, r"2\. Terminal chat  \(4 messages\)")
        terminal.line("/switch 2")
        await step(terminal.expect, "you: hello assistant")
        terminal.line("/quit")
        assert await step(terminal.exit_status) == 0
    finally:
        terminal.close()


@pytest.mark.gen_test(timeout=240)
async def test_a_server_restart_loses_nothing_typed_or_sent(server_process, tmp_path):
    env = {"AI_ECHO_DELAY": "0.02"}  # the real assistant, its echo provider
    first = server_process(env)
    await first.wait_ready()
    email = f"restart-{os.getpid()}@example.test"
    registered = await first.fetch("/api/auth/register", method="POST", json={"email": email, "password": PASSWORD})
    assert registered.code == 201, registered.json
    token = registered.data["tokens"]["accessToken"]
    headers = {"Authorization": f"Bearer {token}"}
    conversation = (await first.fetch("/api/chat/conversations", method="POST", json={"title": "Across a restart"},
                                      headers=headers)).data
    terminal = Terminal("--url", first.base_url, "--conversation", conversation["id"],
                        env={"VACHAT_EMAIL": email, "VACHAT_PASSWORD": PASSWORD})
    second = None
    try:
        await step(terminal.expect, "Type a message")
        terminal.line("before the restart")
        await step(terminal.expect, "assistant: Echo: before the restart")
        terminal.type("half of a line, ")
        first.terminate()
        assert await first.wait_exit() == 0
        await step(terminal.expect, "connection lost")
        terminal.line("finished while the server was down")  # sent when it is back
        terminal.type("typed across ")
        second = ServerProcess(first.env, tmp_path / "server-after.log", port=first.port).start()
        await second.wait_ready()
        await step(terminal.expect, r"\(reconnected\)")
        await step(terminal.expect, "assistant: Echo: half of a line, finished while the server was down")
        terminal.line("the restart")
        await step(terminal.expect, "assistant: Echo: typed across the restart")
        terminal.line("/quit")
        assert await step(terminal.exit_status) == 0
        page = (await second.fetch(f"/api/chat/conversations/{conversation['id']}/messages", headers=headers)).data
        contents = [m["content"] for m in reversed(page["items"])]
        assert contents == [
            "before the restart", "Echo: before the restart",
            "half of a line, finished while the server was down", "Echo: half of a line, finished while the server was down",
            "typed across the restart", "Echo: typed across the restart"]
    finally:
        terminal.close()
        if second is not None:
            second.kill()


@pytest.mark.gen_test(timeout=120)
@pytest.mark.vachat(plugins=["chat"])
async def test_without_an_assistant_messages_are_stored_without_replies(production_http_server, http_port, fetch,
                                                                          make_user):
    user = await make_user()
    terminal = Terminal("--url", f"http://127.0.0.1:{http_port}", "--conversation", "new",
                        env={"VACHAT_EMAIL": user.email, "VACHAT_PASSWORD": user.password})
    try:
        await step(terminal.expect, "this server has no assistant")
        await step(terminal.expect, "Type a message")
        terminal.line("a note to self")
        await stored_somewhere(fetch, user, "a note to self")
        terminal.line("/list")
        await step(terminal.expect, r"1\. Terminal chat  \(1 messages\)")
        terminal.line("/quit")
        assert await step(terminal.exit_status) == 0
    finally:
        terminal.close()
    conversation = (await fetch("/api/chat/conversations", user=user)).data[0]
    assert [m["content"] for m in await messages_of(fetch, user, conversation["id"])] == ["a note to self"]


@pytest.mark.gen_test(timeout=120)
@pytest.mark.vachat(plugins=["chat", ("fakeai", client_fake_ai)])
async def test_without_a_terminal_lines_are_read_and_replies_printed(production_http_server, http_port, make_user):
    user = await make_user()
    env = {**os.environ, "VACHAT_EMAIL": user.email, "VACHAT_PASSWORD": user.password}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vachat", "chat", "--url", f"http://127.0.0.1:{http_port}", "--conversation", "new",
        env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    process.stdin.write(b"hello from a pipe\n")
    replied = b""
    while b"assistant: Echo: hello from a pipe\n" not in replied:
        chunk = await asyncio.wait_for(process.stdout.read(4096), SCREEN_WAIT)
        assert chunk, f"output ended early: {replied!r}"
        replied += chunk
    process.stdin.write(b"/quit\n")
    out, err = await asyncio.wait_for(process.communicate(), SCREEN_WAIT)
    assert process.returncode == 0, err
