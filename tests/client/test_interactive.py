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
import time

import pexpect
import pyte
import pytest

from vachat.testing import ServerProcess, eventually, free_port

from . import fake_ai as client_fake_ai

# Seconds one expected piece of screen output may take to appear.
SCREEN_WAIT = 20
# prompt_toolkit asks the terminal where the cursor is (ESC [6n) and waits for the answer;
# the test answers as a terminal would, from a row near the top.
CURSOR_QUERY = re.compile(r"\x1b\[6n")
CURSOR_ANSWER = "\x1b[5;1R"
PASSWORD = "Correct-Horse-9!"
ROWS, COLUMNS = 40, 160


class ScreenCopy:
    """What a person sees: the terminal's output played on an emulated screen (pyte), its
    scrolled-off lines kept, so a test can count what is shown rather than what was drawn."""

    def __init__(self) -> None:
        self.screen = pyte.HistoryScreen(COLUMNS, ROWS, history=10_000)
        self.stream = pyte.Stream(self.screen)

    def write(self, text: str) -> None:
        self.stream.feed(text)

    def flush(self) -> None:
        pass

    def lines(self) -> list[str]:
        scrolled = ["".join(line[column].data for column in range(COLUMNS)).rstrip()
                    for line in self.screen.history.top]
        return scrolled + [line.rstrip() for line in self.screen.display]


class Terminal:
    """``vachat chat`` on a pseudo-terminal."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        environment = {key: value for key, value in os.environ.items()
                       if key not in ("VACHAT_API_KEY", "VACHAT_EMAIL", "VACHAT_PASSWORD", "PROMPT_TOOLKIT_NO_CPR")}
        environment.update(TERM="xterm", **(env or {}))
        self.child = pexpect.spawn(sys.executable, ["-m", "vachat", "chat", *args], env=environment,
                                   encoding="utf-8", timeout=SCREEN_WAIT, dimensions=(ROWS, COLUMNS))
        self.seen = ScreenCopy()
        self.child.logfile_read = self.seen

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

    def expect_on_screen(self, pattern: str) -> None:
        """A line of the emulated screen matches ``pattern``: for text the terminal draws in
        pieces (prompt_toolkit redraws only what changed, so it is never in the output whole)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + SCREEN_WAIT
        while not any(regex.search(line) for line in self.seen.lines()):
            assert time.monotonic() < deadline, f"{pattern!r} never shown: {self.seen.lines()}"
            # Whatever arrives meanwhile is read (and played on the screen copy).
            if self.child.expect([CURSOR_QUERY, pexpect.TIMEOUT], timeout=0.1) == 0:
                self.child.send(CURSOR_ANSWER)

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


async def create_the_account(terminal: Terminal, email: str, mistype: bool = False) -> None:
    """Answer the prompts that create an account on a development server (``mistype``: the
    repeated password first differs, so it is chosen again)."""
    await step(terminal.expect, "Password:")
    terminal.line(PASSWORD)
    await step(terminal.expect, r"Create this account on this development server\? \[y/N\]")
    terminal.line("y")
    await step(terminal.expect, "Repeat the password:")
    if mistype:
        terminal.line("Correct-Horse-8!")
        await step(terminal.expect, "The two passwords differ")
        await step(terminal.expect, "Choose a password:")
        terminal.line(PASSWORD)
        await step(terminal.expect, "Repeat the password:")
    terminal.line(PASSWORD)
    await step(terminal.expect, f"Account {email} created")


class PipedChat:
    """``vachat chat`` reading from a pipe (no terminal), and what it printed so far."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.printed = b""

    @classmethod
    async def start(cls, http_port: int, user) -> "PipedChat":
        env = {**os.environ, "VACHAT_EMAIL": user.email, "VACHAT_PASSWORD": user.password}
        return cls(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vachat", "chat", "--url", f"http://127.0.0.1:{http_port}", "--conversation", "new",
            env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE))

    def line(self, text: str) -> None:
        self.process.stdin.write(text.encode() + b"\n")

    async def read_until(self, text: bytes) -> None:
        while text not in self.printed:
            try:
                chunk = await asyncio.wait_for(self.process.stdout.read(4096), SCREEN_WAIT)
            except asyncio.TimeoutError:
                raise AssertionError(f"{text!r} never printed: {self.printed!r}") from None
            assert chunk, f"output ended early: {self.printed!r}"
            self.printed += chunk

    async def quit(self) -> bytes:
        """``/quit``; asserts it exits 0 and returns all it printed."""
        self.line("/quit")
        out, err = await asyncio.wait_for(self.process.communicate(), SCREEN_WAIT)
        assert self.process.returncode == 0, err
        self.printed += out
        return self.printed


async def messages_of(fetch, user, conversation_id):
    page = (await fetch(f"/api/chat/conversations/{conversation_id}/messages?limit=200", user=user)).data
    return list(reversed(page["items"]))


@pytest.mark.gen_test(timeout=180)
@pytest.mark.vachat(plugins=["chat", ("fakeai", client_fake_ai)], config={"env": "development"})
async def test_chat_in_a_terminal(production_http_server, http_port, fetch):
    email = "terminal@example.test"
    terminal = Terminal("--url", f"http://127.0.0.1:{http_port}", "--email", email)
    try:
        # No such account on this development server: the client offers to create it. A new
        # password is typed twice: a typo in the second is caught, and it is chosen again.
        await create_the_account(terminal, email, mistype=True)
        await step(terminal.expect, "Type a message")
        signed_in = await fetch("/api/auth/login", method="POST", json={"email": email, "password": PASSWORD})
        conversation = (await fetch("/api/chat/conversations", user=signed_in)).data[0]

        terminal.line("hello assistant")
        await step(terminal.expect, "assistant: Echo: hello assistant")

        # A slow reply: its first words are on the screen while the rest is being generated.
        terminal.line("[slow] tell me a long story about the sea")
        await step(terminal.expect_on_screen, r"assistant: Echo: \[slow\] ")
        stored = await messages_of(fetch, signed_in, conversation["id"])
        assert [m["content"] for m in stored][-1] == "[slow] tell me a long story about the sea"  # not done yet
        terminal.line("/stop")
        await step(terminal.expect, r"\(stopped\)")
        # The bottom bar goes back to its hint once the stopped reply, as stored, is shown.
        await step(terminal.expect_on_screen, "/help for commands")
        stored = await messages_of(fetch, signed_in, conversation["id"])
        assert stored[-1]["role"] == "assistant" and stored[-1]["metadata"]["finishReason"] == "cancelled"
        assert len(stored[-1]["content"]) < len("Echo: [slow] tell me a long story about the sea")
        # The stopped reply is on the screen once: not also left behind with the /stop line.
        whole = "assistant: Echo: [slow] tell me a long story about the sea"
        shown = [line for line in terminal.seen.lines() if line.startswith("assistant: Echo: [") and whole.startswith(line)]
        assert shown == [f"assistant: {stored[-1]['content']}".rstrip()], terminal.seen.lines()

        terminal.line("/search story")
        await step(terminal.expect, r"\[Terminal chat\] you: \[slow\] tell me a long story")
        terminal.line("/new Second thoughts")
        await step(terminal.expect, "— Second thoughts")
        second = (await fetch("/api/chat/conversations", user=signed_in)).data[0]
        terminal.line("/list")
        await step(terminal.expect, r"\*  1\. Second thoughts")
        await step(terminal.expect, r"2\. Terminal chat  \(4 messages\)")
        terminal.line("/switch 99")
        await step(terminal.expect, r"there is no conversation 99 in the last /list \(1-2\)")
        terminal.line("/switch 2")
        await step(terminal.expect, "you: hello assistant")
        terminal.line(f"/switch {second['id']}")  # an id works too
        await step(terminal.expect, "— Second thoughts")
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
    piped = await PipedChat.start(http_port, await make_user())
    piped.line("hello from a pipe")
    await piped.read_until(b"assistant: Echo: hello from a pipe\n")
    await piped.quit()


@pytest.mark.gen_test(timeout=120)
@pytest.mark.vachat(plugins=["chat", ("fakeai", client_fake_ai)],
                    config={"plugin_sections": {"chat": {"typing_timeout": 120}}})  # only the client ends it
async def test_the_room_sees_the_person_typing(production_http_server, http_port, fetch, make_user, ws_connect):
    user = await make_user()
    conversation = (await fetch("/api/chat/conversations", method="POST", json={"title": "Typing"}, user=user)).data
    elsewhere = await ws_connect(user)  # the same person on another device, in the same conversation
    await elsewhere.request("join-conversation", {"conversationId": conversation["id"]})
    terminal = Terminal("--url", f"http://127.0.0.1:{http_port}", "--conversation", conversation["id"],
                        env={"VACHAT_EMAIL": user.email, "VACHAT_PASSWORD": user.password})
    try:
        await step(terminal.expect, "Type a message")
        terminal.type("hello the")
        typing = await elsewhere.receive("user-typing")
        assert typing["data"]["conversationId"] == conversation["id"] and typing["data"]["userId"] == user.id
        # A pause: typing-stop (the server's own expiry is two minutes away).
        stopped = await elsewhere.receive("user-stopped-typing")
        assert stopped["data"]["userId"] == user.id
        # Typing again, then sending: one start for all those keystrokes, a stop when it is sent.
        terminal.type("re, ")
        terminal.line("how are you?")
        await elsewhere.receive("user-typing")
        await elsewhere.receive("user-stopped-typing")
        sent = await elsewhere.receive("new-message")
        assert sent["data"]["content"] == "hello there, how are you?"
        assert not [frame for frame in elsewhere.frames if frame["type"] == "user-typing"]
        # A /command is not a message being typed.
        terminal.line("/list")
        await step(terminal.expect, r"1\. Typing")
        terminal.line("/quit")
        assert await step(terminal.exit_status) == 0
        assert not [frame for frame in elsewhere.frames if frame["type"] == "user-typing"]
    finally:
        terminal.close()


@pytest.mark.gen_test(timeout=120)
@pytest.mark.vachat(plugins=["chat"])
async def test_a_refused_password_is_asked_again_three_times(production_http_server, http_port, make_user):
    user = await make_user()
    url = f"http://127.0.0.1:{http_port}"
    terminal = Terminal("--url", url, "--email", user.email, "--conversation", "new")
    try:
        await step(terminal.expect, "Password:")
        terminal.line("Not-The-Password-1!")
        await step(terminal.expect, r"Invalid e-mail or password; try again \(2 left\)")
        await step(terminal.expect, "Password:")
        terminal.line(user.password)
        await step(terminal.expect, "Type a message")
        terminal.line("/quit")
        assert await step(terminal.exit_status) == 0
    finally:
        terminal.close()
    terminal = Terminal("--url", url, "--email", user.email, "--conversation", "new")
    try:
        for left in (2, 1):
            await step(terminal.expect, "Password:")
            terminal.line("Not-The-Password-1!")
            await step(terminal.expect, rf"try again \({left} left\)")
        await step(terminal.expect, "Password:")
        terminal.line("Not-The-Password-1!")
        await step(terminal.expect, r"vachat chat: Invalid e-mail or password \(UNAUTHORIZED\)")
        assert await step(terminal.exit_status) == 1
    finally:
        terminal.close()


@pytest.mark.gen_test(timeout=60)
async def test_an_unreachable_server_is_said_before_credentials_are_asked():
    for one_shot in ((), ("-m", "hello")):
        terminal = Terminal("--url", f"http://127.0.0.1:{free_port()}", *one_shot)
        try:
            await step(terminal.expect, r"vachat chat: Cannot reach http://127\.0\.0\.1:\d+: [^\r\n]+\r\n")
            assert "E-mail" not in terminal.child.before
            assert await step(terminal.exit_status) == 1
        finally:
            terminal.close()


@pytest.mark.gen_test(timeout=120)
@pytest.mark.vachat(plugins=["chat", ("fakeai", client_fake_ai)], config={"env": "development"})
async def test_one_shot_on_a_terminal_offers_to_create_the_account(production_http_server, http_port, fetch):
    email = "one-shot@example.test"
    terminal = Terminal("--url", f"http://127.0.0.1:{http_port}", "--email", email, "-m", "first words")
    try:
        await create_the_account(terminal, email)
        await step(terminal.expect, "Echo: first words")
        assert await step(terminal.exit_status) == 0
    finally:
        terminal.close()
    signed_in = await fetch("/api/auth/login", method="POST", json={"email": email, "password": PASSWORD})
    assert signed_in.code == 200


@pytest.mark.gen_test(timeout=120)
@pytest.mark.vachat(plugins=["chat", ("fakeai", client_fake_ai)])
async def test_without_a_terminal_a_stopped_reply_is_printed_once(production_http_server, http_port, fetch,
                                                                   make_user):
    user = await make_user()
    piped = await PipedChat.start(http_port, user)
    piped.line("[slow] tell me a long story about the sea")
    await piped.read_until(b"assistant: Echo: [slow] ")
    piped.line("/stop")
    await piped.read_until(b"(stopped)")
    conversation = (await fetch("/api/chat/conversations", user=user)).data[0]

    async def stopped_reply_stored():
        stored = await messages_of(fetch, user, conversation["id"])
        return stored[-1]["role"] == "assistant"

    await eventually(stopped_reply_stored, what="the stopped reply stored")
    # The next reply's frames follow the stopped reply's on the socket: it has been shown by then.
    piped.line("and then?")
    await piped.read_until(b"assistant: Echo: and then?\n")
    printed = await piped.quit()
    assert printed.count(b"[slow]") == 1, printed
