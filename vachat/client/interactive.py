"""The interactive ``vachat chat``: a conversation with the assistant in a terminal.

On a terminal it uses prompt_toolkit, so that what the person types and what the server sends
never fight: finished lines are printed above the input line, the reply being generated grows
token by token just above it, and a bottom bar says who is typing and whether the connection is
down. The input line belongs to the person throughout, also while the server restarts: what
they sent meanwhile is kept by the ``LiveConnection`` and sent when the server is back.
While the person types a message, the conversation's other readers are told so (throttled
``typing-start``, then ``typing-stop`` after a pause or when it is sent).
Without a terminal (input from a pipe) it reads lines and writes the reply as it streams.

Commands: ``/new [title]``, ``/list``, ``/switch N|ID``, ``/stop``, ``/search WORDS``,
``/help``, ``/quit`` (or end of input).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Callable

from .errors import ClientError, NotFound
from .events import (
    AiDelta, AiDone, AiTyping, Disconnected, Event, MessageDeleted, MessageUpdated, NewMessage, Reconnected,
    UserStoppedTyping, UserTyping, event_conversation,
)
from .live import LiveConnection
from .models import Conversation, Message, new_client_message_id
from .rest import Client
from .terminal import EXIT_FAILED, EXIT_OK, Prompter, UsageError, choose_conversation, open_session

__all__ = ["run_interactive", "ChatSession"]

HELP = """Commands:
  /new [title]     start a new conversation
  /list            your recent conversations
  /switch N|ID     go to conversation N of /list (or by id)
  /stop            stop the assistant's reply
  /search WORDS    find messages in your conversations
  /quit            leave (Ctrl-D too)
Anything else is sent to the assistant."""
# Messages shown when a conversation opens, and conversations offered by /list.
HISTORY_SHOWN = 20
CONVERSATIONS_LISTED = 20
# Typing indicators: while the person types a message, typing-start goes out at most once per
# TYPING_REFRESH seconds (the server ends an indicator by itself after its typing_timeout, 6 s by
# default, so a refresh well inside it keeps it up without a frame per keystroke), and
# typing-stop after TYPING_PAUSE seconds without a keystroke, or when the line is sent.
TYPING_REFRESH = 3.0
TYPING_PAUSE = 2.0


class Screen:
    """Where the chat is shown and read. Subclasses: a terminal, or plain lines."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def show(self, line: str) -> None:
        raise NotImplementedError

    def stream(self, delta: str) -> None:
        raise NotImplementedError

    def stream_end(self, line: str) -> None:
        """The streamed reply is complete: ``line`` is it as it was stored."""
        raise NotImplementedError

    def drop_stream(self) -> None:
        """Forget a reply being streamed (the conversation changed)."""

    def set_status(self, key: str, text: str | None) -> None:
        pass

    def on_edit(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with the input line's text whenever the person changes it (only a
        terminal sees keystrokes)."""

    async def read_line(self) -> str | None:
        """The next line the person entered; None at the end of input."""
        raise NotImplementedError


class TerminalScreen(Screen):
    """prompt_toolkit: an input line that streamed output never disturbs."""

    def __init__(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.patch_stdout import patch_stdout

        self._partial: str | None = None
        self._status: dict[str, str] = {}
        self._patch = patch_stdout(raw=True)
        self._session: Any = PromptSession(message=self._message, bottom_toolbar=self._toolbar)

    async def start(self) -> None:
        self._patch.__enter__()

    async def stop(self) -> None:
        self._patch.__exit__(None, None, None)

    def _message(self) -> str:
        if self._partial is None or self._session.app.is_done:
            # An accepted line stays on the screen with its prompt: without the partial reply,
            # which is printed once, whole, when it is stored.
            return "> "
        return f"assistant: {self._partial}\n> "

    def _toolbar(self) -> str:
        return "  ".join(self._status.values()) or "/help for commands"

    def _redraw(self) -> None:
        app = self._session.app
        if app.is_running:
            app.invalidate()

    def show(self, line: str) -> None:
        print(line, flush=True)

    def stream(self, delta: str) -> None:
        self._partial = (self._partial or "") + delta
        self._redraw()

    def stream_end(self, line: str) -> None:
        self._partial = None
        self.show(line)
        self._redraw()

    def drop_stream(self) -> None:
        self._partial = None
        self._redraw()

    def set_status(self, key: str, text: str | None) -> None:
        if text:
            self._status[key] = text
        else:
            self._status.pop(key, None)
        self._redraw()

    def on_edit(self, listener: Callable[[str], None]) -> None:
        self._session.default_buffer.on_text_changed += lambda buffer: listener(buffer.text)

    async def read_line(self) -> str | None:
        while True:
            try:
                return await self._session.prompt_async()
            except KeyboardInterrupt:
                continue  # Ctrl-C clears the line; Ctrl-D or /quit leaves
            except EOFError:
                return None


class PlainScreen(Screen):
    """Lines in, lines out: for pipes and dumb terminals."""

    def __init__(self) -> None:
        self._streaming = False  # the output is in the middle of a streamed reply's line
        self._streamed = ""  # what was printed of the reply being streamed

    def show(self, line: str) -> None:
        if self._streaming:
            sys.stdout.write("\n")
            self._streaming = False
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def stream(self, delta: str) -> None:
        if not self._streaming:
            # A reply interrupted by another line goes on, on a line of its own.
            sys.stdout.write("assistant: " if not self._streamed else "assistant (continued): ")
            self._streaming = True
        self._streamed += delta
        sys.stdout.write(delta)
        sys.stdout.flush()

    def stream_end(self, line: str) -> None:
        streamed, self._streamed = self._streamed, ""
        if self._streaming:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._streaming = False
        elif not streamed or not line.endswith(streamed):
            self.show(line)  # not streamed here (or not as stored): shown whole

    def drop_stream(self) -> None:
        self._streamed = ""
        if self._streaming:
            sys.stdout.write("\n")
            self._streaming = False

    def set_status(self, key: str, text: str | None) -> None:
        if text and key == "connection":
            self.show(f"({text})")

    async def read_line(self) -> str | None:
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        return line.rstrip("\n") if line else None


class ChatSession:
    """One person chatting: the current conversation, what is shown, what they type."""

    def __init__(self, client: Client, live: LiveConnection, screen: Screen) -> None:
        self.client = client
        self.live = live
        self.screen = screen
        self.conversation: Conversation | None = None
        self.listed: list[Conversation] = []
        self._mine: set[str] = set()  # clientMessageIds sent from here: their echo is not shown
        self._streaming: str | None = None  # the reply being shown as it streams
        self._typing: dict[str, str] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._pending = 0  # sends not acknowledged yet
        self.assistant = True  # whether messages ask the assistant (False on a server without one)
        self._typing_in: str | None = None  # the conversation told that this person types
        self._typing_told_at = 0.0  # when typing-start last went out (the loop's clock)
        self._typing_pause: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Future[Any]] = set()
        screen.on_edit(self.edited)

    # -- conversations -------------------------------------------------------------------------

    async def find_assistant(self) -> None:
        """Whether this server has an assistant to ask (its AI plugin's usage route)."""
        try:
            await self.client.ai_usage()
        except NotFound:
            self.assistant = False
            self.screen.show("(this server has no assistant: your messages are stored without replies)")
        except ClientError:
            pass  # something else is wrong; asking will say what

    async def switch(self, conversation: Conversation) -> None:
        self.stopped_typing()
        if self.conversation is not None and self.conversation.id != conversation.id:
            await self.live.leave(self.conversation.id)
        self.conversation = conversation
        self._streaming = None
        self.screen.drop_stream()
        self._typing.clear()
        self.screen.set_status("typing", None)
        self.screen.set_status("ai", None)
        self.screen.show(f"— {conversation.title} ({conversation.id}) —")
        history = await self.client.messages(conversation.id, limit=HISTORY_SHOWN)
        for message in reversed(history.items):
            self.screen.show(self._line(message))
        await self.live.join(conversation.id)

    def _line(self, message: Message, elsewhere: bool = False) -> str:
        if message.role == "assistant":
            return f"assistant{' !' if message.type == 'error' else ''}: {message.content}"
        if message.role == "system":
            return f"system: {message.content}"
        mine = self.client.user is not None and message.user_id == self.client.user.id
        who = ("you (elsewhere)" if elsewhere else "you") if mine else (message.user_id or "someone")
        return f"{who}: {message.content}"

    # -- what the server says -----------------------------------------------------------------------

    async def follow(self) -> None:
        """Show the connection's events until it ends; raises its fatal error."""
        async for event in self.live:
            self.render(event)

    def render(self, event: Event) -> None:
        if isinstance(event, Disconnected):
            self.screen.set_status("connection", "connection lost: reconnecting (what you send is kept)")
            return
        if isinstance(event, Reconnected):
            self.screen.set_status("connection", None)
            self.screen.show("(reconnected)")
            return
        current = self.conversation.id if self.conversation else None
        if event_conversation(event) != current:
            return
        if isinstance(event, NewMessage):
            message = event.message
            if message.client_message_id and message.client_message_id in self._mine:
                return
            if message.role == "assistant":
                self._set_ai_typing(False)
                if self._streaming == message.id:
                    self._streaming = None
                    self.screen.stream_end(self._line(message))
                    return
            self.screen.show(self._line(message, elsewhere=True))
        elif isinstance(event, AiDelta):
            if self._streaming != event.message_id:
                self._streaming = event.message_id
            self.screen.stream(event.delta)
        elif isinstance(event, AiTyping):
            self._set_ai_typing(event.typing)
        elif isinstance(event, AiDone):
            if event.finish_reason not in ("stop", "length"):
                self.screen.set_status("ai", f"reply ended: {event.finish_reason}")
        elif isinstance(event, MessageUpdated):
            self.screen.show(f"(edited) {self._line(event.message)}")
        elif isinstance(event, MessageDeleted):
            self.screen.show("(a message was deleted)")
        elif isinstance(event, UserTyping):
            self._typing[event.user_id] = event.user_name or event.user_id
            self.screen.set_status("typing", f"{', '.join(self._typing.values())} typing…")
        elif isinstance(event, UserStoppedTyping):
            self._typing.pop(event.user_id, None)
            self.screen.set_status("typing", f"{', '.join(self._typing.values())} typing…" if self._typing else None)

    def _set_ai_typing(self, typing: bool) -> None:
        self.screen.set_status("ai", "assistant is typing…" if typing else None)

    # -- what the person types ----------------------------------------------------------------------

    def edited(self, text: str) -> None:
        """The input line changed: tell the conversation that this person is typing a message
        (not a /command), throttled, and that they stopped after a pause."""
        if self.conversation is None or not text.strip() or text.lstrip().startswith("/"):
            self.stopped_typing()
            return
        if self._typing_in not in (None, self.conversation.id):
            self.stopped_typing()  # told in the conversation before a switch
        loop = asyncio.get_running_loop()
        if self._typing_in is None or loop.time() - self._typing_told_at >= TYPING_REFRESH:
            self._typing_in, self._typing_told_at = self.conversation.id, loop.time()
            self._in_background(self.live.typing(self.conversation.id, True))
        if self._typing_pause is not None:
            self._typing_pause.cancel()
        self._typing_pause = loop.call_later(TYPING_PAUSE, self.stopped_typing)

    def stopped_typing(self) -> None:
        if self._typing_pause is not None:
            self._typing_pause.cancel()
            self._typing_pause = None
        if self._typing_in is not None:
            conversation_id, self._typing_in = self._typing_in, None
            self._in_background(self.live.typing(conversation_id, False))

    def _in_background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def read_input(self) -> None:
        while True:
            line = await self.screen.read_line()
            if line is None:
                return
            self.stopped_typing()
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                try:
                    if not await self.command(line):
                        return
                except ClientError as error:
                    self.screen.show(f"! {error}")
                continue
            task = asyncio.ensure_future(self.send(line))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def send(self, text: str) -> None:
        assert self.conversation is not None
        cmid = new_client_message_id()
        self._mine.add(cmid)
        self._update_pending(+1)
        try:
            await self.live.send(self.conversation.id, text, requires_ai_response=self.assistant,
                                 client_message_id=cmid)
        except ClientError as error:
            self.screen.show(f"! not sent ({text[:40]}): {error}")
        finally:
            self._update_pending(-1)

    def _update_pending(self, change: int) -> None:
        self._pending += change
        self.screen.set_status("sending", f"sending {self._pending}…" if self._pending else None)

    async def command(self, line: str) -> bool:
        """Run a /command; False to leave."""
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        if name in ("/quit", "/exit", "/q"):
            return False
        if name == "/help":
            self.screen.show(HELP)
        elif name == "/new":
            await self.switch(await self.client.create_conversation(rest or "Terminal chat"))
        elif name == "/list":
            self.listed = (await self.client.list_conversations(limit=CONVERSATIONS_LISTED)).items
            for number, conversation in enumerate(self.listed, 1):
                marker = "*" if self.conversation and conversation.id == self.conversation.id else " "
                self.screen.show(f"{marker}{number:>3}. {conversation.title}  ({conversation.message_count} messages)")
        elif name == "/switch":
            if not rest:
                self.screen.show("usage: /switch N (from /list) or /switch ID")
            elif not rest.isdigit():
                await self.switch(await self.client.get_conversation(rest))
            elif 1 <= int(rest) <= len(self.listed):
                await self.switch(self.listed[int(rest) - 1])
            elif self.listed:
                self.screen.show(f"there is no conversation {rest} in the last /list (1-{len(self.listed)})")
            else:
                self.screen.show("there is no list to pick from yet: /list first")
        elif name == "/stop":
            assert self.conversation is not None
            stopped = await self.live.stop(self.conversation.id)
            self.screen.show("(stopped)" if stopped else "(nothing to stop)")
        elif name == "/search":
            if not rest:
                self.screen.show("usage: /search WORDS")
            else:
                found = await self.client.search(rest)
                titles = await self._titles({message.conversation_id for message in found.items})
                for message in found.items:
                    self.screen.show(f"  [{titles[message.conversation_id]}] {self._line(message)}")
                if not found.items:
                    self.screen.show("  (no messages found)")
        else:
            self.screen.show(f"unknown command {name}; /help lists them")
        return True

    async def _titles(self, conversation_ids: set[str]) -> dict[str, str]:
        """The titles of conversations, fetched together (the id stands in for one that
        cannot be read any more)."""
        ids = sorted(conversation_ids)
        found = await asyncio.gather(*(self.client.get_conversation(cid) for cid in ids), return_exceptions=True)
        for answer in found:
            if isinstance(answer, BaseException) and not isinstance(answer, ClientError):
                raise answer
        return {cid: answer.title if isinstance(answer, Conversation) else cid for cid, answer in zip(ids, found)}

    async def drain(self) -> None:
        """Let sends typed before /quit reach the server (they are acknowledged quickly)."""
        if self._sends or self._background:
            await asyncio.wait(self._sends | self._background, timeout=10)


async def pick_conversation(client: Client, wanted: str | None,
                            prompter: Prompter) -> tuple[Conversation, list[Conversation]]:
    """The conversation to open, and the ones listed to pick it from (``/switch N`` numbers)."""
    if wanted or not prompter.interactive:
        return await choose_conversation(client, wanted), []  # without a terminal: the most recent
    recent = (await client.list_conversations(limit=CONVERSATIONS_LISTED)).items
    if not recent:
        return await client.create_conversation("Terminal chat"), []
    prompter.out.write("Your conversations:\n")
    for number, conversation in enumerate(recent, 1):
        prompter.out.write(f"{number:>3}. {conversation.title}\n")
    while True:
        answer = prompter.ask(f"Conversation [1-{len(recent)}, Enter for a new one]: ")
        if not answer:
            return await client.create_conversation("Terminal chat"), []  # the list is out of date
        if answer.isdigit() and 1 <= int(answer) <= len(recent):
            return recent[int(answer) - 1], recent
        prompter.out.write("Please give a number from the list, or press Enter.\n")


async def run_interactive(args: argparse.Namespace) -> int:
    on_terminal = sys.stdin.isatty() and sys.stdout.isatty()
    prompter = Prompter(interactive=sys.stdin.isatty(), out=sys.stdout)
    client = Client(args.url, user_agent="vachat-chat")
    live: LiveConnection | None = None
    try:
        await open_session(client, args, prompter)
        conversation, listed = await pick_conversation(client, args.conversation, prompter)
        live = client.live()
        await live.connect()
        screen: Screen = TerminalScreen() if on_terminal else PlainScreen()
        session = ChatSession(client, live, screen)
        session.listed = listed
        await screen.start()
        try:
            await session.switch(conversation)
            await session.find_assistant()
            screen.show("Type a message, or /help.")
            follower = asyncio.ensure_future(session.follow())
            reader = asyncio.ensure_future(session.read_input())
            done, _ = await asyncio.wait({follower, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                await session.drain()
                follower.cancel()
            else:
                reader.cancel()
                follower.result()  # the connection's fatal error, if any
        finally:
            await screen.stop()
        return EXIT_OK
    except UsageError as error:
        print(f"vachat chat: {error}", file=sys.stderr)
        return 2
    except ClientError as error:
        print(f"vachat chat: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if live is not None:
            await live.close()
        await client.close()
