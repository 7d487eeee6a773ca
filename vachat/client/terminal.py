"""What both modes of ``vachat chat`` share: exit statuses, asking the person at the terminal,
signing in and choosing the conversation.

``command`` (one-shot, and the entry point) and ``interactive`` both build on this module; it
imports neither. Like the rest of ``vachat.client``, it imports nothing from the server's modules.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from dataclasses import dataclass
from typing import TextIO

from .errors import ApiError, Conflict, Unauthorized
from .models import Conversation
from .rest import Client

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "UsageError", "Prompter", "open_session",
           "sign_in", "choose_conversation", "PASSWORD_TRIES"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad arguments or missing credentials: exit status 2."""


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
