"""Outgoing e-mail: one ``Mailer`` interface, a console backend and an SMTP backend.

``make_mailer`` picks the backend from the settings: ``SMTP_URL`` unset means ``ConsoleMailer``
(the message is printed on standard output, never into the log files; under ``VACHAT_ENV=test``
it is also kept in ``mailer.outbox`` so tests can read the links), set means ``SmtpMailer``:

- ``smtp://user:pass@host:port`` connects in plain text and upgrades with STARTTLS whenever the
  server offers it (port 587 when omitted);
- ``smtps://user:pass@host:port`` uses TLS from the first byte (port 465 when omitted).

Credentials are sent only over TLS, or in plain text to a loopback address (a local relay):
an SMTP server that offers no STARTTLS never sees the password.

Callers that must not wait for delivery (or must not let its duration show in a response, as
forgot-password must not) hand the work to ``send_soon`` / ``run_in_background``; ``drain``
waits for those jobs, at shutdown and in tests.

This module must never block the IOLoop (smtplib runs through ``run_blocking``), never raise a
delivery failure to a request (failures are logged and reported as ``False``), and never log
the SMTP password or, in production, a message body (bodies carry one-time links).
"""

from __future__ import annotations

import abc
import asyncio
import collections
import email.headerregistry
import email.policy
import email.utils
import ipaddress
import logging
import smtplib
import ssl
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Awaitable, Callable, Coroutine, TextIO, TypeVar
from urllib.parse import unquote, urlparse

__all__ = [
    "Mailer", "ConsoleMailer", "SmtpMailer", "SentMessage", "Outbox", "make_mailer", "build_message",
]

log = logging.getLogger("vachat.mail")
T = TypeVar("T")
RunBlocking = Callable[..., Awaitable[Any]]

# Seconds smtplib waits to connect and for each reply. A healthy relay answers in well under a
# second; a dead one must not hold a worker thread (and the mail job) for minutes.
SMTP_TIMEOUT = 15.0
# Default ports when the URL names none: submission with STARTTLS, and implicit TLS (RFC 8314).
SMTP_DEFAULT_PORT = 587
SMTPS_DEFAULT_PORT = 465
# Messages the test outbox keeps: enough for any one test, bounded so a long run cannot grow.
OUTBOX_SIZE = 100
# Longest a shutdown (or a test) waits for queued mail jobs before giving up on them (s).
MAIL_DRAIN_TIMEOUT = 20.0
# Default wait for a message to arrive in the test outbox (s).
OUTBOX_WAIT = 5.0
# Frames a printed message, so it stands out among the JSON log lines on the same terminal.
CONSOLE_RULE = "-" * 72


class _SharedHeaderClasses(email.headerregistry.HeaderRegistry):
    """The ``email`` package's header registry, making each header class once.

    The stock registry builds a new class for every header it parses or sets
    (``type('_' + name, (cls, BaseHeader), {})``), and a class refers to itself through its
    MRO: a reference cycle that only a full garbage collection frees. A message left about 80
    such objects behind, and once the node serves, full collections are rare (see
    ``vachat.garbage_collection``). The classes depend only on the header's kind, so one of
    each serves every message."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[type, type] = {}

    def __getitem__(self, name: str) -> type:
        kind = self.registry.get(name.lower(), self.default_class)
        made = self._made.get(kind)
        if made is None:
            made = self._made[kind] = super().__getitem__(name)
        return made


# The standard library's modern policy (what ``EmailMessage()`` uses) with the registry above.
MAIL_POLICY = email.policy.default.clone(header_factory=_SharedHeaderClasses())


@dataclass(frozen=True)
class SentMessage:
    """A message as the console mailer saw it (what the test outbox holds)."""

    to: str
    subject: str
    text: str
    html: str | None
    sender: str


def build_message(sender: str, to: str, subject: str, text: str, html: str | None = None) -> EmailMessage:
    """A MIME message: plain text, plus an HTML alternative when given.

    Header values containing line breaks raise ``ValueError`` (the ``email`` package refuses
    them), so a crafted address or subject cannot inject headers.
    """
    message = EmailMessage(policy=MAIL_POLICY)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(usegmt=True)
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = email.utils.make_msgid(domain=domain)
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


class Mailer(abc.ABC):
    """Sends e-mail. ``send`` never raises for a delivery failure: it logs and returns False."""

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self._jobs: set[asyncio.Task[Any]] = set()

    @abc.abstractmethod
    async def send(self, to: str, subject: str, text: str, html: str | None = None) -> bool:
        """Deliver one message; ``True`` once the backend accepted it."""

    # -- background jobs ---------------------------------------------------------

    def run_in_background(self, job: Coroutine[Any, Any, T]) -> "asyncio.Task[T]":
        """Run ``job`` (work that ends in sending mail) without the caller waiting for it.

        The task is kept until it ends, so it is not garbage-collected half way, and ``drain``
        can wait for it. An exception in the job is logged, never lost silently.
        """
        task = asyncio.ensure_future(job)
        self._jobs.add(task)
        task.add_done_callback(self._job_done)
        return task

    def send_soon(self, to: str, subject: str, text: str, html: str | None = None) -> "asyncio.Task[bool]":
        """``send`` in the background."""
        return self.run_in_background(self.send(to, subject, text, html))

    def _job_done(self, task: "asyncio.Task[Any]") -> None:
        self._jobs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.error("a mail job failed: %s", error, exc_info=(type(error), error, error.__traceback__))

    @property
    def pending(self) -> int:
        """Background jobs not finished yet."""
        return len(self._jobs)

    async def drain(self, timeout: float = MAIL_DRAIN_TIMEOUT) -> None:
        """Wait for the background jobs, including ones they start, up to ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._jobs:
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("mail jobs still running after %.0fs; abandoning them", timeout,
                            extra={"jobs": len(self._jobs)})
                return
            await asyncio.wait(set(self._jobs), timeout=remaining)


class Outbox:
    """The console mailer's memory in tests: the last ``OUTBOX_SIZE`` messages, awaitable."""

    def __init__(self, size: int = OUTBOX_SIZE) -> None:
        self.messages: collections.deque[SentMessage] = collections.deque(maxlen=size)
        self._arrived = asyncio.Event()

    def append(self, message: SentMessage) -> None:
        self.messages.append(message)
        self._arrived.set()

    def clear(self) -> None:
        self.messages.clear()

    def to(self, address: str) -> list[SentMessage]:
        """The kept messages to ``address`` (case-insensitive), oldest first."""
        return [m for m in self.messages if m.to.lower() == address.lower()]

    async def receive(self, to: str | None = None, *, timeout: float = OUTBOX_WAIT) -> SentMessage:
        """Remove and return the oldest message (to ``to`` when given), waiting for one."""

        async def wait() -> SentMessage:
            while True:
                for message in list(self.messages):
                    if to is None or message.to.lower() == to.lower():
                        self.messages.remove(message)
                        return message
                self._arrived.clear()
                await self._arrived.wait()

        return await asyncio.wait_for(wait(), timeout)

    def __len__(self) -> int:
        return len(self.messages)


class ConsoleMailer(Mailer):
    """Prints messages on standard output instead of sending them (the embedded default).

    Outside production the whole message is printed, so a developer can follow the link, but
    never logged: a body holds live one-time links (password reset!), and log files are kept
    for days and read by more people than the mailbox owner. The log gets one line naming the
    recipient and subject. In production nothing of the body is printed either.
    """

    def __init__(self, sender: str, *, print_bodies: bool = True, keep_outbox: bool = False,
                 stream: TextIO | None = None) -> None:
        super().__init__(sender)
        self.print_bodies = print_bodies
        self.outbox: Outbox | None = Outbox() if keep_outbox else None
        self._stream = stream  # None: sys.stdout as it is when a message is printed

    async def send(self, to: str, subject: str, text: str, html: str | None = None) -> bool:
        try:
            build_message(self.sender, to, subject, text, html)  # same header checks as SMTP
        except (ValueError, TypeError) as error:
            log.error("e-mail not sent: invalid message: %s", error, extra={"mailTo": to})
            return False
        if self.print_bodies:
            stream = self._stream or sys.stdout
            stream.write(f"{CONSOLE_RULE}\ne-mail (console, not sent)\nTo: {to}\nSubject: {subject}\n\n"
                         f"{text}\n{CONSOLE_RULE}\n")
            stream.flush()
            log.info("e-mail printed on standard output (console mailer, not sent)",
                     extra={"mailTo": to, "mailSubject": subject})
        else:
            log.info("e-mail (console, not sent; body withheld in production): set SMTP_URL to deliver",
                     extra={"mailTo": to, "mailSubject": subject})
        if self.outbox is not None:
            self.outbox.append(SentMessage(to, subject, text, html, self.sender))
        return True


class SmtpMailer(Mailer):
    """Delivers through an SMTP relay named by ``SMTP_URL``, with smtplib off the IOLoop."""

    def __init__(self, url: str, sender: str, run_blocking: RunBlocking, *,
                 timeout: float = SMTP_TIMEOUT, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(sender)
        parsed = urlparse(url)
        if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname:
            raise ValueError("SMTP_URL must look like smtp://user:pass@host:port or smtps://…")
        self.implicit_tls = parsed.scheme == "smtps"
        self.host = parsed.hostname
        self.port = parsed.port or (SMTPS_DEFAULT_PORT if self.implicit_tls else SMTP_DEFAULT_PORT)
        self.username = unquote(parsed.username) if parsed.username else None
        self._password = unquote(parsed.password) if parsed.password else None
        self.timeout = timeout
        self._run_blocking = run_blocking
        # Verified TLS (certificate and host name) by default; tests pass their own CA.
        self._ssl_context = ssl_context or ssl.create_default_context()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def send(self, to: str, subject: str, text: str, html: str | None = None) -> bool:
        try:
            message = build_message(self.sender, to, subject, text, html)
        except (ValueError, TypeError) as error:
            log.error("e-mail not sent: invalid message: %s", error, extra={"mailTo": to})
            return False
        try:
            await self._run_blocking(self._deliver, message)
        except Exception as error:  # every failure is an outcome to log, never a request's 500
            log.error("e-mail to %s via %s not sent: %s", to, self.address, self._describe(error),
                      extra={"mailTo": to, "smtpServer": self.address})
            return False
        log.info("e-mail sent", extra={"mailTo": to, "mailSubject": subject, "smtpServer": self.address})
        return True

    def _deliver(self, message: EmailMessage) -> None:
        """Blocking: connect, secure, authenticate, send, quit."""
        if self.implicit_tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                                    context=self._ssl_context)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with client:
            client.ehlo()
            secure = self.implicit_tls
            if not secure and client.has_extn("starttls"):
                client.starttls(context=self._ssl_context)
                client.ehlo()  # RFC 3207: forget what was learned before TLS and ask again
                secure = True
            if self.username is not None:
                if not secure and not _is_loopback(self.host):
                    raise SmtpSecurityError(
                        f"{self.address} offers no STARTTLS; refusing to send credentials in plain text")
                client.login(self.username, self._password or "")
            client.send_message(message)

    def _describe(self, error: Exception) -> str:
        """The error for a log line, with the password removed should a server echo it."""
        text = f"{type(error).__name__}: {error}"
        if self._password:
            text = text.replace(self._password, "***")
        return text[:500]

    def __repr__(self) -> str:  # never shows the password
        return f"SmtpMailer({'smtps' if self.implicit_tls else 'smtp'}://{self.address})"


class SmtpSecurityError(smtplib.SMTPException):
    """The connection could not be secured enough to send credentials."""


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_mailer(settings: Any, run_blocking: RunBlocking) -> Mailer:
    """The mailer the settings ask for: SMTP when ``smtp_url`` is set, else the console."""
    if settings.smtp_url:
        return SmtpMailer(settings.smtp_url, settings.email_from, run_blocking)
    if settings.is_production:
        log.warning("SMTP_URL is not set: e-mail (verification, password reset) is logged, not delivered")
    return ConsoleMailer(settings.email_from, print_bodies=not settings.is_production,
                         keep_outbox=settings.env == "test")
