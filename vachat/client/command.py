"""``vachat chat``: a terminal client of a running server, on ``vachat.client``.

Two modes:

- **one-shot** (``-m TEXT``): sends one message to a conversation (``--conversation ID``, or
  ``new``; by default the most recent one, or a new one when there is none), prints the
  assistant's reply as it streams and exits 0; on failure it prints the error's message on
  standard error and exits 1 (2 for bad arguments or missing credentials). ``--json`` prints one
  JSON object per line instead: ``conversation``, ``message``, ``delta``…, ``reply`` or ``error``.
  ``--no-reply`` sends without asking the assistant.
- **interactive** (the default, ``vachat.client.interactive``).

Both first check that the server answers (``/health``): an unreachable one is a one-line error
and exit status 1 before anything is asked. Credentials: ``VACHAT_API_KEY``, else an e-mail
(``--email`` or ``VACHAT_EMAIL``) and a password (``VACHAT_PASSWORD``, else asked for on the
terminal, again after a refusal: three tries). On a development server a sign-in that fails
offers to create the account (its password typed twice); without a terminal the error says how.

Like the rest of ``vachat.client``, this imports nothing from the server's modules.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from .errors import ApiError, ClientError, Conflict, ConnectionFailed, Unauthorized
from .models import Conversation, Message
from .rest import DEFAULT_URL, Client

__all__ = ["add_arguments", "run", "open_session", "Prompter", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130
# Seconds a one-shot exchange may take in all (sign-in, send, the whole reply) before it gives up.
DEFAULT_TIMEOUT = 300.0


class UsageError(Exception):
    """Bad arguments or missing credentials: exit status 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("VACHAT_URL", DEFAULT_URL),
                        help=f"the server (VACHAT_URL; default {DEFAULT_URL})")
    parser.add_argument("--email", default=os.environ.get("VACHAT_EMAIL"),
                        help="sign in as (VACHAT_EMAIL); the password comes from VACHAT_PASSWORD or a prompt. "
                             "VACHAT_API_KEY signs in with an API key instead")
    parser.add_argument("--conversation", metavar="ID|new",
                        help="the conversation to use, or 'new' (default: the most recent one)")
    parser.add_argument("-m", "--message", metavar="TEXT", help="send TEXT, print the reply, exit (one-shot)")
    parser.add_argument("--json", action="store_true", help="one-shot: one JSON event per line")
    parser.add_argument("--no-reply", action="store_true", help="one-shot: send without asking the assistant")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"one-shot: seconds to wait in all (default {DEFAULT_TIMEOUT:g})")


def run(args: argparse.Namespace) -> int:
    """The ``vachat chat`` command."""
    if args.message is None and (args.json or args.no_reply):
        print("vachat chat: --json and --no-reply go with -m TEXT", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.message is not None:
            return asyncio.run(one_shot(args))
        from .interactive import run_interactive

        return asyncio.run(run_interactive(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


# -- signing in --------------------------------------------------------------------------------

# Passwords a person may type for an existing account before the command gives up (a typo
# should not end the session, a guessing loop should).
PASSWORD_TRIES = 3


@dataclass
class Prompter:
    """Asks the person at the terminal, when there is one."""

    interactive: bool
    out: TextIO = sys.stderr

    def ask(self, question: str) -> str:
        if not self.interactive:
            raise UsageError(f"{question.rstrip(': ')} is needed and there is no terminal to ask on")
        self.out.write(question)
        self.out.flush()
        line = sys.stdin.readline()
        if not line:
            raise UsageError("no answer (end of input)")
        return line.strip()

    def secret(self, question: str) -> str:
        if not self.interactive:
            raise UsageError("a password is needed: set VACHAT_PASSWORD, or VACHAT_API_KEY, or run on a terminal")
        return getpass.getpass(question)

    def confirm(self, question: str) -> bool:
        return self.interactive and self.ask(f"{question} [y/N] ").lower() in ("y", "yes")

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def new_password(self, typed: str | None = None) -> str:
        """A new password, typed twice alike: a typo in it would make an account nobody can
        sign in to. ``typed`` is one already typed once (it is asked again to confirm it)."""
        while True:
            password = typed or self.secret("Choose a password: ")
            if self.secret("Repeat the password: ") == password:
                return password
            self.say("The two passwords differ; choose it again.")
            typed = None


async def open_session(client: Client, args: argparse.Namespace, prompter: Prompter) -> None:
    """Make sure the server is there (its ``/health``), then sign in. The server is asked
    first so that an unreachable one (``ConnectionFailed``) is said at once, not after the
    person typed their credentials."""
    report = await client.health()
    await sign_in(client, args, prompter, development=report.get("environment") == "development")


async def sign_in(client: Client, args: argparse.Namespace, prompter: Prompter, *, development: bool) -> None:
    """Sign ``client`` in from the environment, the arguments or the person at the terminal.

    A typed password that is refused is asked again (``PASSWORD_TRIES`` in all). On a
    ``development`` server the first refusal offers to create the account (its password typed
    twice); without a terminal the error says how to create it."""
    api_key = os.environ.get("VACHAT_API_KEY")
    if api_key:
        client.api_key = api_key
        await client.me()
        return
    email = args.email or prompter.ask("E-mail: ")
    given = os.environ.get("VACHAT_PASSWORD")
    offered = False
    for attempt in range(1, PASSWORD_TRIES + 1):
        password = given or prompter.secret("Password: ")
        try:
            await client.sign_in(email, password)
            return
        except Unauthorized as error:
            refused = error
        if not prompter.interactive:
            break
        if development and not offered:
            offered = True
            if prompter.confirm(f"Signing in as {email} failed. Create this account on this development server?"):
                if await _create_account(client, email, password, prompter, typed=given is None):
                    return
        if given is not None or attempt == PASSWORD_TRIES:
            break  # a password from the environment is the same on every try
        prompter.say(f"{refused.message}; try again ({PASSWORD_TRIES - attempt} left).")
    if development and not prompter.interactive:
        raise Unauthorized(f"{refused.message} (if {email} has no account yet, create it by running "
                           f"`vachat chat --email {email}` on a terminal)") from None
    raise refused


async def _create_account(client: Client, email: str, password: str, prompter: Prompter, *, typed: bool) -> bool:
    """Register ``email``; False when it already has an account (the password was wrong)."""
    if typed:
        password = prompter.new_password(password)
    while True:
        try:
            await client.register(email, password)
            prompter.say(f"Account {email} created.")
            return True
        except Conflict:
            prompter.say(f"{email} already has an account, and that is not its password.")
            return False
        except ApiError as error:
            if error.code != "VALIDATION_FAILED":
                raise
            prompter.say(str(error))
            password = prompter.new_password()


async def choose_conversation(client: Client, wanted: str | None) -> Conversation:
    """``wanted`` (an id), a new one for ``new``, else the most recent (a new one if none)."""
    if wanted and wanted != "new":
        return await client.get_conversation(wanted)
    if wanted is None:
        recent = await client.list_conversations(limit=1)
        if recent.items:
            return recent.items[0]
    return await client.create_conversation("Terminal chat")


# -- one-shot -------------------------------------------------------------------------------------


async def one_shot(args: argparse.Namespace) -> int:
    out = JsonOutput() if args.json else TextOutput()
    client = Client(args.url, user_agent="vachat-chat")
    try:
        await asyncio.wait_for(_exchange(client, args, out), args.timeout)
        return out.status
    except UsageError as error:
        out.error("USAGE", str(error))
        return EXIT_USAGE
    except asyncio.TimeoutError:
        out.error("TIMEOUT", f"no complete reply within {args.timeout:g} s")
        return EXIT_FAILED
    except ApiError as error:
        out.error(error.code, str(error))
        return EXIT_FAILED
    except ClientError as error:
        out.error("CONNECTION_FAILED" if isinstance(error, ConnectionFailed) else "CLIENT_ERROR", str(error))
        return EXIT_FAILED
    finally:
        await client.close()


async def _exchange(client: Client, args: argparse.Namespace, out: "TextOutput") -> None:
    await open_session(client, args, Prompter(interactive=sys.stdin.isatty()))
    conversation = await choose_conversation(client, args.conversation)
    out.conversation(conversation)
    if args.no_reply:
        out.message(await client.send_message(conversation.id, args.message))
        return
    live = client.live(buffer_events=False)
    await live.connect()
    try:
        await live.join(conversation.id)
        stream = await live.ask(conversation.id, args.message)
        out.message(stream.question)
        async for delta in stream:
            out.delta(stream.message_id, delta)
        out.reply(stream.message)
    finally:
        await live.close()


class TextOutput:
    """The reply's text on standard output as it streams; errors on standard error."""

    status = EXIT_OK

    def conversation(self, conversation: Conversation) -> None:
        pass

    def message(self, message: Message | None) -> None:
        pass

    def delta(self, message_id: str | None, delta: str) -> None:
        sys.stdout.write(delta)
        sys.stdout.flush()

    def reply(self, message: Message | None) -> None:
        if message is not None and message.type == "error":
            self.error("AI_ERROR", message.content)
            return
        sys.stdout.write("\n")
        sys.stdout.flush()

    def error(self, code: str, text: str) -> None:
        self.status = EXIT_FAILED
        print(f"vachat chat: {text}", file=sys.stderr)


class JsonOutput(TextOutput):
    """One JSON object per line on standard output, ``{"event": …}``."""

    @staticmethod
    def _emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def conversation(self, conversation: Conversation) -> None:
        self._emit({"event": "conversation", "conversation": conversation.raw})

    def message(self, message: Message | None) -> None:
        if message is not None:
            self._emit({"event": "message", "message": message.raw})

    def delta(self, message_id: str | None, delta: str) -> None:
        self._emit({"event": "delta", "messageId": message_id, "delta": delta})

    def reply(self, message: Message | None) -> None:
        if message is not None:
            self._emit({"event": "reply", "message": message.raw})
            if message.type == "error":
                self.status = EXIT_FAILED

    def error(self, code: str, text: str) -> None:
        super().error(code, text)
        self._emit({"event": "error", "code": code, "message": text})
