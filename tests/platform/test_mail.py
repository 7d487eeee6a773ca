"""E-mail: the console backend and its test outbox, and the SMTP backend against a real SMTP
server (aiosmtpd) on loopback — plain, STARTTLS, implicit TLS, AUTH — plus the failures that
must be logged and never become a 500 or leak the SMTP password."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gc
import logging
import re
import socket
from dataclasses import dataclass
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult

from vachat.mail import ConsoleMailer, SmtpMailer, build_message, make_mailer
from vachat.testing import DEFAULT_WAIT

SMTP_PASSWORD = "pa:ss/w@rd-s3cr3t"  # URL-special characters, percent-encoded in SMTP_URL
SMTP_USER = "mailer"


# ---------------------------------------------------------------------------
# a real SMTP server on loopback, served by the test's own event loop
# ---------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    tls: bool
    login: bytes | None


class Inbox:
    """aiosmtpd handler keeping what arrives; ``receive`` awaits the next message."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.auth_attempts: list[bytes] = []
        self._arrived = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        login = session.auth_data if session.authenticated else None
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed,
                                      session.ssl is not None, login))
        self._arrived.set()
        return "250 Message accepted for delivery"

    async def receive(self, timeout: float = DEFAULT_WAIT) -> Received:
        async def wait() -> Received:
            while not self.messages:
                self._arrived.clear()
                await self._arrived.wait()
            return self.messages.pop(0)

        return await asyncio.wait_for(wait(), timeout)

    def authenticator(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        self.auth_attempts.append(auth_data.login)
        ok = auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login)


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@pytest.fixture
def smtp_socket():
    """A bound, listening loopback socket: its port is known before the app is configured."""
    sock = listening_socket()
    yield sock
    sock.close()


@pytest.fixture
def serve_smtp():
    """``await serve_smtp(sock, **SMTP options, ssl=None)`` → an ``Inbox`` served on ``sock``."""
    servers = []

    async def serve(sock: socket.socket, *, ssl: Any = None, **options: Any) -> Inbox:
        inbox = Inbox()
        options.setdefault("authenticator", inbox.authenticator)
        server = await asyncio.get_running_loop().create_server(
            lambda: SMTP(inbox, hostname="mx.test", **options), sock=sock, ssl=ssl)
        servers.append(server)
        return inbox

    yield serve
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def tls_certificates():
    """A throw-away CA and a certificate for 127.0.0.1 and localhost (trustme)."""
    import ssl

    import trustme

    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1", "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


@pytest.fixture
def vachat_config(request):
    """Point the app at the test's SMTP server when the test uses one."""
    if "smtp_socket" in request.fixturenames:
        port = request.getfixturevalue("smtp_socket").getsockname()[1]
        return {"smtp_url": f"smtp://127.0.0.1:{port}"}
    if "closed_port" in request.fixturenames:
        port = request.getfixturevalue("closed_port")
        return {"smtp_url": f"smtp://{SMTP_USER}:{quote(SMTP_PASSWORD)}@127.0.0.1:{port}"}
    return {}


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    sock.close()
    return port


def quote(text: str) -> str:
    from urllib.parse import quote as url_quote

    return url_quote(text, safe="")


def smtp_mailer(app: Any, sock: socket.socket, scheme: str = "smtp", credentials: bool = False, **kwargs: Any) -> SmtpMailer:
    port = sock.getsockname()[1]
    userinfo = f"{SMTP_USER}:{quote(SMTP_PASSWORD)}@" if credentials else ""
    return SmtpMailer(f"{scheme}://{userinfo}127.0.0.1:{port}", "vachat <no-reply@vachat.test>",
                      app.run_blocking, **kwargs)


def body_text(message: email.message.EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


async def register(fetch: Any, email_address: str) -> Any:
    response = await fetch("/api/auth/register", method="POST", json={
        "email": email_address, "password": "Sturdy-Passw0rd!", "firstName": "Mail", "lastName": "Test"})
    assert response.code == 201, response.body
    return response


# ---------------------------------------------------------------------------
# console backend
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_console_mailer_is_the_default_and_keeps_an_outbox_in_tests(app, caplog, capsys):
    assert isinstance(app.mailer, ConsoleMailer)
    caplog.set_level(logging.INFO, logger="vachat.mail")
    assert await app.mailer.send("Ann@Example.com", "Hello", "Visit http://localhost:3000/x/abc",
                                 "<p>Visit</p>") is True
    message = await app.mailer.outbox.receive(to="ann@example.com")
    assert (message.subject, message.html) == ("Hello", "<p>Visit</p>")
    assert "http://localhost:3000/x/abc" in message.text
    # Printed for the developer, never logged: log files outlive a one-time link.
    assert "http://localhost:3000/x/abc" in capsys.readouterr().out
    assert not any("/x/abc" in record.getMessage() for record in caplog.records)
    assert any(getattr(record, "mailTo", None) == "Ann@Example.com" for record in caplog.records)


@pytest.mark.gen_test
async def test_console_mailer_withholds_bodies_in_production(caplog, capsys):
    mailer = ConsoleMailer("vachat <no-reply@vachat.test>", print_bodies=False)
    caplog.set_level(logging.INFO, logger="vachat.mail")
    assert await mailer.send("bob@example.com", "Reset", "secret link http://x/reset-password/tok123") is True
    assert mailer.outbox is None
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "tok123" not in logged and "SMTP_URL" in logged
    assert "tok123" not in capsys.readouterr().out


@pytest.mark.gen_test
async def test_header_injection_is_refused_and_logged(app, caplog):
    caplog.set_level(logging.ERROR, logger="vachat.mail")
    assert await app.mailer.send("eve@example.com", "Hi\r\nBcc: victim@example.com", "body") is False
    assert len(app.mailer.outbox) == 0
    assert any("invalid message" in record.getMessage() for record in caplog.records)


def test_a_message_leaves_no_reference_cycles_behind():
    """Once the node serves, full collections are rare: what only they free would pile up.
    The stock header registry left about 80 objects a message (a class made per header)."""
    def build_and_flatten() -> None:
        message = build_message("no-reply@vachat.test", "dora@example.com", "Grüße", "Plain", "<b>Rich</b>")
        parsed = email.message_from_bytes(message.as_bytes(), policy=message.policy)
        assert parsed["Subject"] == "Grüße"

    build_and_flatten()  # the header classes are made once, on first use
    enabled = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        for _ in range(3):
            build_and_flatten()
        assert gc.collect() == 0
    finally:
        if enabled:
            gc.enable()


@pytest.mark.gen_test
async def test_background_jobs_are_drained_and_their_failures_logged(app, caplog):
    caplog.set_level(logging.ERROR, logger="vachat.mail")

    async def failing_job():
        raise RuntimeError("job broke")

    app.mailer.send_soon("carl@example.com", "Queued", "text")
    app.mailer.run_in_background(failing_job())
    await app.mailer.drain()
    assert app.mailer.pending == 0
    assert (await app.mailer.outbox.receive(to="carl@example.com")).subject == "Queued"
    assert any("a mail job failed" in record.getMessage() for record in caplog.records)


def test_make_mailer_picks_smtp_from_the_url(app):
    settings = app.config.replace(smtp_url="smtps://u:p%40ss@mail.example.com")
    mailer = make_mailer(settings, app.run_blocking)
    assert isinstance(mailer, SmtpMailer)
    assert (mailer.host, mailer.port, mailer.implicit_tls, mailer.username) == ("mail.example.com", 465, True, "u")
    assert "p@ss" not in repr(mailer) and "p%40ss" not in repr(mailer)
    assert make_mailer(app.config.replace(smtp_url="smtp://relay.internal"), app.run_blocking).port == 587


# ---------------------------------------------------------------------------
# SMTP backend against aiosmtpd on loopback
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_smtp_delivers_text_and_html(app, serve_smtp):
    sock = listening_socket()
    inbox = await serve_smtp(sock)
    mailer = smtp_mailer(app, sock)
    assert await mailer.send("dora@example.com", "Greetings", "Plain body", "<b>Rich body</b>") is True
    received = await inbox.receive()
    assert received.rcpt_tos == ["dora@example.com"]
    assert received.mail_from == "no-reply@vachat.test"
    assert received.message["Subject"] == "Greetings"
    assert received.message["Message-ID"]
    assert body_text(received.message).strip() == "Plain body"
    assert received.message.get_body(("html",)).get_content().strip() == "<b>Rich body</b>"
    assert received.tls is False  # this server offers no STARTTLS


@pytest.mark.gen_test
async def test_smtp_upgrades_with_starttls_and_authenticates(app, serve_smtp, tls_certificates):
    server_context, client_context = tls_certificates
    sock = listening_socket()
    inbox = await serve_smtp(sock, tls_context=server_context, require_starttls=True)
    mailer = smtp_mailer(app, sock, credentials=True, ssl_context=client_context)
    assert await mailer.send("erin@example.com", "Over TLS", "secured") is True
    received = await inbox.receive()
    assert received.tls is True
    assert received.login == SMTP_USER.encode()


@pytest.mark.gen_test
async def test_smtps_uses_implicit_tls(app, serve_smtp, tls_certificates):
    server_context, client_context = tls_certificates
    sock = listening_socket()
    # aiosmtpd does not notice TLS set up by the listener itself, so it must be told that AUTH
    # is fine here; the client side is what this test is about.
    inbox = await serve_smtp(sock, ssl=server_context, auth_require_tls=False)
    mailer = smtp_mailer(app, sock, scheme="smtps", credentials=True, ssl_context=client_context)
    assert await mailer.send("fay@example.com", "Implicit", "tls from the start") is True
    received = await inbox.receive()
    assert received.login == SMTP_USER.encode()
    assert body_text(received.message).strip() == "tls from the start"


@pytest.mark.gen_test
async def test_untrusted_certificate_is_refused(app, serve_smtp, tls_certificates, caplog):
    server_context, _ = tls_certificates
    sock = listening_socket()
    inbox = await serve_smtp(sock, tls_context=server_context)
    caplog.set_level(logging.ERROR, logger="vachat.mail")
    mailer = smtp_mailer(app, sock, credentials=True)  # the system trust store: the test CA is unknown
    assert await mailer.send("gus@example.com", "Nope", "text") is False
    assert inbox.messages == [] and inbox.auth_attempts == []
    assert any("CERTIFICATE_VERIFY_FAILED" in record.getMessage() for record in caplog.records)


@pytest.mark.gen_test
async def test_plaintext_credentials_only_go_to_loopback(app, serve_smtp, monkeypatch, caplog):
    sock = listening_socket()
    inbox = await serve_smtp(sock, auth_require_tls=False)
    caplog.set_level(logging.ERROR, logger="vachat.mail")
    # Loopback relay without TLS: credentials may go in plain text.
    assert await smtp_mailer(app, sock, credentials=True).send("hal@example.com", "Local", "ok") is True
    assert (await inbox.receive()).login == SMTP_USER.encode()
    # The same server seen as remote: no STARTTLS offered, so the password is never sent.
    monkeypatch.setattr("vachat.mail._is_loopback", lambda host: False)
    assert await smtp_mailer(app, sock, credentials=True).send("hal@example.com", "Remote", "no") is False
    assert inbox.messages == [] and len(inbox.auth_attempts) == 1
    assert any("refusing to send credentials" in record.getMessage() for record in caplog.records)


@pytest.mark.gen_test
async def test_rejected_credentials_are_logged_without_the_password(app, serve_smtp, caplog):
    sock = listening_socket()
    inbox = await serve_smtp(sock, auth_require_tls=False,
                             authenticator=lambda *args: AuthResult(success=False, handled=False))
    caplog.set_level(logging.DEBUG)
    mailer = smtp_mailer(app, sock, credentials=True)
    assert await mailer.send("ivy@example.com", "Denied", "text") is False
    assert inbox.messages == []
    logged = caplog.text
    assert "SMTPAuthenticationError" in logged
    assert SMTP_PASSWORD not in logged and quote(SMTP_PASSWORD) not in logged


@pytest.mark.gen_test
async def test_silent_server_times_out_and_is_logged(app, caplog):
    sock = listening_socket()  # accepts connections but never says a word
    try:
        caplog.set_level(logging.ERROR, logger="vachat.mail")
        mailer = smtp_mailer(app, sock, timeout=0.5)
        assert await mailer.send("jon@example.com", "Silence", "text") is False
        assert any("not sent" in r.getMessage() and "timed out" in r.getMessage().lower() for r in caplog.records)
    finally:
        sock.close()


# ---------------------------------------------------------------------------
# through the server: the reset link arrives over SMTP; a dead relay is not a 500
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_forgot_password_mail_arrives_over_smtp_with_the_link(app, fetch, smtp_socket, serve_smtp):
    assert isinstance(app.mailer, SmtpMailer)
    inbox = await serve_smtp(smtp_socket)
    await register(fetch, "kim@example.com")
    verification = await inbox.receive()  # registering sends the verification e-mail
    assert verification.rcpt_tos == ["kim@example.com"]
    assert re.search(r"/verify-email/[\w-]{20,}", body_text(verification.message))

    response = await fetch("/api/auth/forgot-password", method="POST", json={"email": "KIM@example.com"})
    assert response.code == 200
    received = await inbox.receive()
    assert received.rcpt_tos == ["kim@example.com"]
    link = re.search(r"(\S+)/reset-password/([\w-]{20,})", body_text(received.message))
    assert link and link.group(1) == app.config.public_url
    assert link.group(0) in received.message.get_body(("html",)).get_content()

    # The token in the mail works exactly once.
    reset = await fetch("/api/auth/reset-password", method="POST",
                        json={"token": link.group(2), "password": "Brand-New-Passw0rd!"})
    assert reset.code == 200, reset.body
    login = await fetch("/api/auth/login", method="POST",
                        json={"email": "kim@example.com", "password": "Brand-New-Passw0rd!"})
    assert login.code == 200


@pytest.mark.gen_test
async def test_unreachable_smtp_is_logged_not_a_500(app, fetch, closed_port, caplog):
    caplog.set_level(logging.DEBUG)
    await register(fetch, "lou@example.com")
    response = await fetch("/api/auth/forgot-password", method="POST", json={"email": "lou@example.com"})
    assert response.code == 200
    await app.mailer.drain()
    failures = [r for r in caplog.records if r.name == "vachat.mail" and "not sent" in r.getMessage()]
    assert failures and all(r.levelno == logging.ERROR for r in failures)
    assert SMTP_PASSWORD not in caplog.text and quote(SMTP_PASSWORD) not in caplog.text
