"""Look-alike identities and the text names may hold (issue 7, items 10 and 12), through the
real server: fullwidth, Cyrillic, zero-width and trailing-dot addresses, usernames in another
case or with look-alike digits, decomposed passwords, control characters in names."""

from __future__ import annotations

import unicodedata

import pytest

from vachat.accounts.models import User
from vachat.testing import assert_error, error_fields, login

PASSWORD = "Look-Alike-42?"


async def register(fetch, email, password=PASSWORD, **extra):
    return await fetch("/api/auth/register", method="POST", json={"email": email, "password": password, **extra})


# ---------------------------------------------------------------------------
# 10. e-mail addresses
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("look_alike", [
    "ａｌｉｃｅ@example.com",        # fullwidth: NFKC makes it the same address
    "\u0430lice@example.com",        # Cyrillic а: only the confusable skeleton catches it
    "alice@ex\u0430mple.com",        # … in the domain too
    "alice@example.com.",            # a trailing dot names the same DNS domain
    "ALICE@EXAMPLE.COM",
    "a1ice@example.com",             # digit one for l
])
@pytest.mark.gen_test
async def test_a_look_alike_address_cannot_register_beside_the_original(app, fetch, look_alike):
    assert (await register(fetch, "alice@example.com")).code == 201
    body = assert_error(await register(fetch, look_alike), 409, "CONFLICT")
    assert error_fields(body) == {"email": "is already registered"}
    assert await app.db.run(User.select().count) == 1


@pytest.mark.gen_test
async def test_the_original_cannot_register_beside_an_earlier_look_alike(fetch):
    assert (await register(fetch, "\u0430lice@example.com")).code == 201
    assert_error(await register(fetch, "alice@example.com"), 409, "CONFLICT")


@pytest.mark.parametrize("invisible", ["\u200b", "\u200d", "\ufeff", "\u2060", "\u00ad", "\u202e", "\u3164", "\x07"])
@pytest.mark.gen_test
async def test_addresses_with_invisible_or_control_characters_are_refused(fetch, invisible):
    body = assert_error(await register(fetch, f"ali{invisible}ce@example.com"), 400, "VALIDATION_FAILED")
    assert set(error_fields(body)) == {"email"}
    assert "invisible" in error_fields(body)["email"]


@pytest.mark.gen_test
async def test_normalised_addresses_are_stored_and_sign_in_in_any_spelling(fetch):
    response = await register(fetch, "ＢＯＢ@Example.COM.")
    assert response.code == 201, response.body
    assert response.data["user"]["email"] == "bob@example.com"
    for spelling in ("bob@example.com", "ＢＯＢ@example.com", "Bob@Example.com."):
        assert (await login(fetch, spelling, PASSWORD)).code == 200, spelling
    # A look-alike is not the account: it signs in to nothing.
    assert_error(await login(fetch, "b\u043eb@example.com", PASSWORD), 401, "UNAUTHORIZED")


@pytest.mark.gen_test
async def test_forgot_password_reaches_the_account_through_a_normalised_spelling(app, fetch):
    assert (await register(fetch, "carol@example.com")).code == 201
    await app.mailer.drain()
    app.mailer.outbox.clear()
    await fetch("/api/auth/forgot-password", method="POST", json={"email": "ＣＡＲＯＬ@example.com."})
    await app.mailer.drain()
    message = await app.mailer.outbox.receive(to="carol@example.com")
    assert message.subject == "Reset your password"


# ---------------------------------------------------------------------------
# 10. usernames
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("look_alike", ["Alice.Smith", "ALICE.SMITH", "alice.smlth", "a1ice.smith", "alice.srnith"])
@pytest.mark.gen_test
async def test_usernames_are_unique_case_insensitively_and_by_look(fetch, look_alike):
    first = await register(fetch, "one@example.com", username="alice.smith")
    assert first.code == 201 and first.data["user"]["username"] == "alice.smith"
    expected = 409 if look_alike != "alice.smlth" else 201  # i and l are told apart in lower case
    response = await register(fetch, "two@example.com", username=look_alike)
    assert response.code == expected, response.body
    if expected == 409:
        assert error_fields(assert_error(response, 409, "CONFLICT")) == {"username": "is taken"}


@pytest.mark.gen_test
async def test_a_username_keeps_its_case_for_display(fetch):
    response = await register(fetch, "dora@example.com", username="DoraTheExplorer")
    assert response.data["user"]["username"] == "DoraTheExplorer"
    assert_error(await register(fetch, "dora2@example.com", username="doratheexplorer"), 409, "CONFLICT")


# ---------------------------------------------------------------------------
# 10. passwords: one password however its characters were composed
# ---------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_a_password_set_composed_signs_in_decomposed_and_the_reverse(fetch, make_user):
    composed = "Café-Crème-42!"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert (await register(fetch, "nfc@example.com", composed)).code == 201
    assert (await login(fetch, "nfc@example.com", decomposed)).code == 200
    assert (await register(fetch, "nfd@example.com", decomposed)).code == 201
    assert (await login(fetch, "nfd@example.com", composed)).code == 200
    # And the change-password check of the current one.
    user = await make_user(password=composed)
    response = await fetch("/api/users/change-password", method="POST", user=user,
                           json={"currentPassword": decomposed, "newPassword": "Another-One-77?"})
    assert response.code == 200, response.body


# ---------------------------------------------------------------------------
# 12. names hold no control characters; mail does not greet by them
# ---------------------------------------------------------------------------

HOSTILE_NAME = "Eve\r\nBcc: victim@example.com\x1b[2J\u202egnp.exe\u2028Line"


@pytest.mark.gen_test
async def test_control_characters_are_stripped_from_names_on_register(app, fetch):
    response = await register(fetch, "eve@example.com", firstName=HOSTILE_NAME, lastName="Mal\tlory",
                              displayName="Eve\u0007 the\nGreat")
    assert response.code == 201, response.body
    user = response.data["user"]
    assert user["firstName"] == "Eve Bcc: victim@example.com [2Jgnp.exe Line"
    assert user["lastName"] == "Mal lory"
    assert user["displayName"] == "Eve the Great"
    for value in (user["firstName"], user["lastName"], user["displayName"], user["name"]):
        assert not any(unicodedata.category(char) in ("Cc", "Zl", "Zp") or char == "\u202e" for char in value)


@pytest.mark.gen_test
async def test_control_characters_are_stripped_from_names_on_profile_update(fetch, make_user):
    user = await make_user()
    response = await fetch("/api/users/profile", method="PUT", user=user,
                           json={"firstName": "Zoë\n\n", "lastName": "\u202eO'Brien\x1b", "displayName": "\r\n"})
    assert response.code == 200, response.body
    assert (response.data["firstName"], response.data["lastName"]) == ("Zoë", "O'Brien")
    assert response.data["displayName"] is None  # nothing left: cleared
    # Joiners that names and emoji need are kept.
    response = await fetch("/api/users/profile", method="PUT", user=user,
                           json={"displayName": "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 👩\u200d💻"})
    assert response.data["displayName"] == "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 👩\u200d💻"


@pytest.mark.gen_test
async def test_the_verification_and_reset_mails_do_not_greet_by_name(app, fetch):
    assert (await register(fetch, "frank@example.com", firstName="Call", lastName="+1 555 0100 now",
                           displayName="Your bank")).code == 201
    await app.mailer.drain()
    verification = await app.mailer.outbox.receive(to="frank@example.com")
    await fetch("/api/auth/forgot-password", method="POST", json={"email": "frank@example.com"})
    await app.mailer.drain()
    reset = await app.mailer.outbox.receive(to="frank@example.com")
    for message in (verification, reset):
        for text in (message.text, message.html):
            assert "Your bank" not in text and "555" not in text and "Call" not in text
        assert message.text.startswith("Hello,")
