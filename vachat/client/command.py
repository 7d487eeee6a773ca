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
import json
import os
import sys
from typing import Any

from .errors import ApiError, ClientError, ConnectionFailed
from .interactive import run_interactive
from .models import Conversation, Message
from .rest import DEFAULT_URL, Client
from .terminal import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Prompter, UsageError, choose_conversation,
                       open_session)

__all__ = ["add_arguments", "run", "open_session", "Prompter", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE"]

# Seconds a one-shot exchange may take in all (sign-in, send, the whole reply) before it gives up.
DEFAULT_TIMEOUT = 300.0


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
        return asyncio.run(run_interactive(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


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
