"""Mailed links work out of the box (issue 7, item 14): on a server with no front end, the
verification and reset links open vachat's own pages, whose form completes the action the way
a browser submits it; a GET alone (a link scanner) spends nothing; link templates send the
links to a front end instead; PUBLIC_URL defaults to the server's own address."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlencode, urljoin

import pytest
import tornado.httpclient

from vachat.accounts.models import User
from vachat.config import ConfigError, load_settings
from vachat.testing import eventually, login

NEW_PASSWORD = "Page-Reset-2024?"
# A server's output appears a little after the request that causes it (s).
OUTPUT_WAIT = 10.0


class FormReader(HTMLParser):
    """The first form of a page as a browser sees it: its method, action and inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.form: dict | None = None
        self.inputs: list[dict] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form" and self.form is None:
            self.form = attributes
        elif tag in ("input", "button") and self.form is not None:
            self.inputs.append({"tag": tag, **attributes})

    def handle_data(self, data):
        self.text.append(data)


def read_page(body: bytes) -> FormReader:
    reader = FormReader()
    reader.feed(body.decode())
    return reader


async def http(url: str, method: str = "GET", body: str | None = None, headers=None):
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        return await client.fetch(url, method=method, body=body, headers=headers, raise_error=False,
                                  follow_redirects=False, request_timeout=30)
    finally:
        client.close()


async def submit(page_url: str, page: FormReader, values: dict[str, str]):
    """POST the page's form as a browser would: to its action (the page itself when empty),
    form-encoded, with the named submit button's value."""
    assert page.form is not None and page.form.get("method", "get").lower() == "post"
    fields = {}
    for element in page.inputs:
        name = element.get("name")
        if not name:
            continue
        if element["tag"] == "button" or element.get("type") in ("hidden", "submit"):
            fields[name] = element.get("value", "")
        else:
            fields[name] = values[name]
    target = urljoin(page_url, page.form.get("action") or "")
    return await http(target, "POST", urlencode(fields),
                      {"Content-Type": "application/x-www-form-urlencoded"})


def assert_page_headers(response) -> None:
    headers = response.headers
    assert headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp and "script-src" not in csp
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"


async def mailed_link(server, kind: str) -> str:
    try:
        links = await eventually(lambda: re.findall(rf"(http://\S+/{kind}/[A-Za-z0-9_-]+)", server.output()),
                                 OUTPUT_WAIT, f"a {kind} link in the server's output")
    except AssertionError as error:
        raise AssertionError(f"{error}:\n{server.output()}") from None
    return links[-1]


@pytest.fixture
def no_front_end_server(server_process, tmp_path):
    """A development server with nothing configured: PUBLIC_URL empty, console mail."""
    return server_process(env={
        "VACHAT_ENV": "development", "PUBLIC_URL": "", "EMAIL_VERIFY_URL": "", "EMAIL_RESET_URL": "",
        "SMTP_URL": "", "VACHAT_DATA_DIR": str(tmp_path / "var"), "DATABASE_URL": f"sqlite:///{tmp_path / 'links.db'}",
        "REDIS_URL": "",
    })


@pytest.mark.gen_test(timeout=90)
async def test_the_mailed_links_complete_their_action_with_no_front_end(no_front_end_server):
    server = no_front_end_server
    await server.wait_ready()
    response = await server.fetch("/api/auth/register", method="POST",
                                  json={"email": "newcomer@example.com", "password": "First-Visit-42?"})
    assert response.code == 201, response.body
    access_token = response.json["data"]["tokens"]["accessToken"]

    # The verification link points at this very server (PUBLIC_URL defaulted to it).
    link = await mailed_link(server, "verify-email")
    assert link.startswith(server.base_url + "/verify-email/")
    page = await http(link)
    assert page.code == 200
    assert_page_headers(page)
    for _ in range(3):  # a mail scanner fetching the link, more than once: nothing is spent
        assert (await http(link)).code == 200
    me = await server.fetch("/api/auth/me", headers={"Authorization": f"Bearer {access_token}"})
    assert me.json["data"]["isEmailVerified"] is False

    done = await submit(link, read_page(page.body), {})
    assert done.code == 200, done.body
    assert "is verified" in done.body.decode()
    me = await server.fetch("/api/auth/me", headers={"Authorization": f"Bearer {access_token}"})
    assert me.json["data"]["isEmailVerified"] is True
    again = await submit(link, read_page(page.body), {})  # the link is single-use
    assert again.code == 400 and "invalid or has expired" in again.body.decode()

    # The reset link, the same way.
    await server.fetch("/api/auth/forgot-password", method="POST", json={"email": "newcomer@example.com"})
    link = await mailed_link(server, "reset-password")
    assert link.startswith(server.base_url + "/reset-password/")
    page = await http(link)
    assert page.code == 200
    assert_page_headers(page)
    assert (await server.fetch("/api/auth/login", method="POST",
                               json={"email": "newcomer@example.com", "password": "First-Visit-42?"})).code == 200
    form = read_page(page.body)
    mismatch = await submit(link, form, {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD + "x"})
    assert mismatch.code == 400 and "differ" in mismatch.body.decode()
    weak = await submit(link, form, {"password": "weakpass", "confirm": "weakpass"})
    assert weak.code == 400 and "upper-case" in weak.body.decode()
    assert "weakpass" not in weak.body.decode()  # never echoed
    assert read_page(weak.body).form is not None  # the token is not spent: try again
    done = await submit(link, form, {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert done.code == 200, done.body
    assert "has been reset" in done.body.decode()
    assert (await server.fetch("/api/auth/login", method="POST",
                               json={"email": "newcomer@example.com", "password": NEW_PASSWORD})).code == 200
    assert (await server.fetch("/api/auth/login", method="POST",
                               json={"email": "newcomer@example.com", "password": "First-Visit-42?"})).code == 401


@pytest.mark.gen_test
async def test_a_get_of_a_page_never_spends_the_token(app, fetch, make_user):
    user = await make_user()
    await fetch("/api/auth/forgot-password", method="POST", json={"email": user.email})
    await app.mailer.drain()
    message = await app.mailer.outbox.receive(to=user.email)
    token = re.search(r"/reset-password/([A-Za-z0-9_-]+)", message.text).group(1)
    for _ in range(3):
        page = await fetch(f"/reset-password/{token}")
        assert page.code == 200 and b"<form" in page.body
    # Still good for the API after all those GETs.
    response = await fetch("/api/auth/reset-password", method="POST", json={"token": token, "password": NEW_PASSWORD})
    assert response.code == 200, response.body
    assert (await login(fetch, user.email, NEW_PASSWORD)).code == 200


@pytest.mark.gen_test
async def test_page_text_is_escaped_and_errors_are_pages(fetch):
    response = await fetch("/verify-email/" + "A" * 43, method="POST", body="confirm=1",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.code == 400
    assert response.headers["Content-Type"].startswith("text/html")
    assert "invalid or has expired" in response.body.decode()
    assert (await fetch("/verify-email/short")).code == 404  # not a token: no page


@pytest.mark.vachat(config={"email_verify_url": "https://app.example.com/verify?t={token}",
                            "email_reset_url": "https://app.example.com/reset/{token}"})
@pytest.mark.gen_test
async def test_link_templates_send_the_links_to_a_front_end(app, fetch):
    response = await fetch("/api/auth/register", method="POST",
                           json={"email": "front@example.com", "password": "Elsewhere-Page-42?"})
    assert response.code == 201
    await fetch("/api/auth/forgot-password", method="POST", json={"email": "front@example.com"})
    await app.mailer.drain()
    verification = await app.mailer.outbox.receive(to="front@example.com")
    reset = await app.mailer.outbox.receive(to="front@example.com")
    verify_token = re.search(r"https://app\.example\.com/verify\?t=([A-Za-z0-9_-]{40,})", verification.text).group(1)
    assert re.search(r"https://app\.example\.com/reset/[A-Za-z0-9_-]{40,}", reset.text)
    # The front end posts the token back to the API.
    done = await fetch("/api/auth/verify-email", method="POST", json={"token": verify_token})
    assert done.code == 200
    assert (await app.db.run(User.by_email, "front@example.com")).is_email_verified


def test_public_url_defaults_to_the_servers_own_address():
    assert load_settings(environ={}).public_url == "http://localhost:3000"
    assert load_settings(environ={"HOST": "127.0.0.1", "PORT": "8123"}).public_url == "http://127.0.0.1:8123"
    assert load_settings(environ={"HOST": "::1", "PORT": "8123"}).public_url == "http://[::1]:8123"
    assert load_settings(environ={"PUBLIC_URL": "https://chat.example.com/"}).public_url == "https://chat.example.com"
    for name, value in (("EMAIL_VERIFY_URL", "https://app.example.com/verify"), ("EMAIL_RESET_URL", "ftp://x/{token}"),
                        ("PUBLIC_URL", "chat.example.com")):
        with pytest.raises(ConfigError) as caught:
            load_settings(environ={name: value})
        assert name in str(caught.value)
