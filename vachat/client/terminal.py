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

from .errors import ApiError, ClientError, Conflict, Unauthorized
from .models import Conversation
from .rest import Client

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "UsageError", "Prompter", "sign_in",
           "choose_conversation"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad arguments or missing credentials: exit status 2."""


# -- signing in --------------------------------------------------------------------------------


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


async def sign_in(client: Client, args: argparse.Namespace, prompter: Prompter) -> None:
    """Sign ``client`` in from the environment, the arguments or the person at the terminal."""
    api_key = os.environ.get("VACHAT_API_KEY")
    if api_key:
        client.api_key = api_key
        await client.me()
        return
    email = args.email or prompter.ask("E-mail: ")
    password = os.environ.get("VACHAT_PASSWORD") or prompter.secret("Password: ")
    try:
        await client.sign_in(email, password)
        return
    except Unauthorized:
        if not prompter.interactive or not await _is_development(client):
            raise
    if not prompter.confirm(f"Signing in as {email} failed. Create this account on this development server?"):
        raise Unauthorized("Invalid e-mail or password")
    while True:
        try:
            await client.register(email, password)
            prompter.out.write(f"Account {email} created.\n")
            return
        except Conflict:
            raise Unauthorized(f"{email} already has an account, and that is not its password") from None
        except ApiError as error:
            if error.code != "VALIDATION_FAILED":
                raise
            prompter.out.write(f"{error}\n")
            password = prompter.secret("Choose another password: ")


async def _is_development(client: Client) -> bool:
    """Whether the server says it runs in development (``/health``'s ``environment``)."""
    try:
        return (await client.health()).get("environment") == "development"
    except ClientError:
        return False


async def choose_conversation(client: Client, wanted: str | None) -> Conversation:
    """``wanted`` (an id), a new one for ``new``, else the most recent (a new one if none)."""
    if wanted and wanted != "new":
        return await client.get_conversation(wanted)
    if wanted is None:
        recent = await client.list_conversations(limit=1)
        if recent.items:
            return recent.items[0]
    return await client.create_conversation("Terminal chat")
