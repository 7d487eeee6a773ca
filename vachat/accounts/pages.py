"""The pages behind the links vachat mails, for a server with no front end of its own.

``GET /verify-email/<token>`` and ``GET /reset-password/<token>`` show a minimal HTML page with a
form; only the form's ``POST`` (to the same address) spends the token, through the same code as
``POST /api/auth/verify-email`` and ``/api/auth/reset-password``. A GET never does: mail
scanners and link previews fetch every link in a message, and must not verify an address or
burn a reset link before its owner opens it.

Pages are rendered by Tornado's template engine with autoescaping on (``templates/``), never by
string formatting, and served with a Content-Security-Policy that allows nothing but posting
the form back to this server: no script, no style, no frames, no other form targets. They
send no ``Referer`` (the token is in the address) and are never cached.

With ``EMAIL_VERIFY_URL`` / ``EMAIL_RESET_URL`` set, mailed links go to the front end instead;
these pages stay available (an old message keeps working) but nothing links to them.

This module must never spend a token on GET, never echo a password, and never put a token in
anything but the page's own address.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tornado.web

from ..errors import ApiError, RateLimited, ValidationFailed
from ..errors import as_api_error
from ..request_info import client_ip, limit_subject
from ..web import HeadLikeGet
from .recovery import EMAIL_VERIFIED_MESSAGE, PASSWORD_RESET_MESSAGE, reset_password, verify_email

__all__ = ["ROUTES", "VerifyEmailPage", "ResetPasswordPage", "PAGE_CSP"]

TEMPLATES = Path(__file__).with_name("templates")
# Nothing loads from anywhere; the one thing the page does is post its form to this server.
PAGE_CSP = "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# What the token part of a page address may be (the API's token schema, as a URL segment).
_TOKEN = r"(?P<token>[A-Za-z0-9_-]{16,128})"
# Longest password the form accepts, as the JSON API does (the policy then says 72 bytes).
MAX_PASSWORD_LENGTH = 1024


class AccountPage(HeadLikeGet, tornado.web.RequestHandler):
    """A page of this module: security headers, the global per-IP limit, drain accounting,
    and errors shown as the page itself rather than as JSON."""

    template = "page.html"
    title = ""

    def set_default_headers(self) -> None:
        for name, value in PAGE_HEADERS.items():
            self.set_header(name, value)

    def get_template_path(self) -> str:
        return str(TEMPLATES)

    @property
    def client_ip(self) -> str:
        return client_ip(self.request.remote_ip or "", self.request.headers, self.application.trusted_networks)

    @property
    def client_limit_subject(self) -> str:
        """The client as per-IP limits count it (IPv6 by /64), as for the API's handlers."""
        return limit_subject(self.client_ip)

    async def prepare(self) -> None:
        self.application.request_started(self)
        decision = await self.application.limiter.hit(f"global:{self.client_limit_subject}",
                                                      self.application.config.rate_limit_global)
        if not decision.allowed:
            raise RateLimited(retry_after=decision.retry_after)

    def on_finish(self) -> None:
        self.application.request_finished(self)

    def show(self, *, status: int = 200, error: str | None = None, problems: list[str] | None = None,
             message: str | None = None, show_form: bool = False) -> None:
        self.set_status(status)
        self.render(self.template, title=self.title, error=error, problems=problems or [], message=message,
                    show_form=show_form)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = as_api_error(kwargs.get("exc_info"), status_code)
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.show(status=error.status, error=error.message)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (ApiError, tornado.web.HTTPError)):
            return  # an expected outcome; the access log tells it
        super().log_exception(typ, value, tb)

    def show_failure(self, error: ApiError, *, form_can_fix: bool) -> None:
        """An API error as the page: a bad or spent token ends the form, a bad password does not."""
        for name, value in error.headers.items():
            self.set_header(name, value)
        details = error.details if isinstance(error.details, list) else []
        token_bad = any(detail.get("field") == "token" for detail in details)
        problems = [f"The password {detail['message']}." for detail in details
                    if form_can_fix and detail.get("field") == "password"]
        self.show(status=error.status, error=error.message, problems=problems,
                  show_form=form_can_fix and not token_bad and not isinstance(error, RateLimited))


class VerifyEmailPage(AccountPage):
    template = "verify-email.html"
    title = "Confirm your e-mail address"

    async def get(self, token: str) -> None:
        self.show(show_form=True)

    async def post(self, token: str) -> None:
        try:
            await verify_email(self, token)
        except ApiError as error:
            self.show_failure(error, form_can_fix=False)
            return
        self.show(message=EMAIL_VERIFIED_MESSAGE)


class ResetPasswordPage(AccountPage):
    template = "reset-password.html"
    title = "Choose a new password"

    async def get(self, token: str) -> None:
        self.show(show_form=True)

    async def post(self, token: str) -> None:
        # strip=False: spaces are part of a password.
        password = self.get_body_argument("password", "", strip=False)
        confirm = self.get_body_argument("confirm", "", strip=False)
        if not password or len(password) > MAX_PASSWORD_LENGTH:
            self.show(status=400, error="Enter a new password.", problems=[
                f"The password must be 1 to {MAX_PASSWORD_LENGTH} characters."], show_form=True)
            return
        if password != confirm:
            self.show(status=400, error="The two passwords differ; type the same one twice.", show_form=True)
            return
        try:
            await reset_password(self, token, password)
        except (ValidationFailed, RateLimited) as error:
            self.show_failure(error, form_can_fix=True)
            return
        self.show(message=PASSWORD_RESET_MESSAGE)


ROUTES: list[tuple[str, type]] = [
    (rf"/verify-email/{_TOKEN}", VerifyEmailPage),
    (rf"/reset-password/{_TOKEN}", ResetPasswordPage),
]
