"""Validation messages a person would write, per field (issue #7, item 16), through the real
server: REST bodies, query parameters and WebSocket frames. ``details`` stays a list of
``{field, message}``, one per failing field, and never repeats the value that was sent."""

import pytest

from tests.plugins import sample
from vachat.testing import assert_error, error_fields

# jsonschema's own wording, which must never reach a client.
JSONSCHEMA_WORDING = ("is not a ", "is not of type", "does not match", "is too long", "is too short",
                      "is a required property", "is not one of", "is less than", "is greater than",
                      "Additional properties", "should be non-empty", "'")


def assert_human(details: list[dict[str, str]]) -> None:
    assert isinstance(details, list) and details
    for detail in details:
        assert set(detail) == {"field", "message"}, detail
        assert not any(wording in detail["message"] for wording in JSONSCHEMA_WORDING), detail


async def register(fetch, **body):
    response = await fetch("/api/auth/register", method="POST", json=body)
    error = assert_error(response, 400, "VALIDATION_FAILED")
    assert_human(error["details"])
    return error_fields(error)


@pytest.mark.gen_test
async def test_register_messages(fetch):
    fields = await register(fetch, email="notanemail", password="Correct-Horse-7!", username="a!",
                            language="123", firstName=7)
    assert fields == {
        "email": "must be a valid e-mail address",
        "username": "must be 3 to 50 letters, digits, dots, dashes or underscores",
        "language": "must be a language tag such as en or pt-BR",
        "firstName": "must be text",
    }
    assert await register(fetch, password="Correct-Horse-7!") == {"email": "is required"}
    assert await register(fetch, email="a@example.test", password="") == {"password": "must not be empty"}


@pytest.mark.gen_test
async def test_profile_messages(fetch, make_user):
    user = await make_user()

    async def update(body):
        error = assert_error(await fetch("/api/users/profile", method="PUT", json=body, user=user),
                             400, "VALIDATION_FAILED")
        assert_human(error["details"])
        return error_fields(error)

    assert await update({"bio": "x" * 2001, "timezone": ""}) == {
        "bio": "must be at most 2000 characters long", "timezone": "must not be empty"}
    assert await update({"preferences": {f"k{n}": n for n in range(101)}}) == {
        "preferences": "must have at most 100 entries"}
    assert await update({"preferences": {"k" * 65: 1}}) == {
        "preferences": "keys must be at most 64 characters long"}
    assert await update({"displayName": 5}) == {"displayName": "must be text or null"}


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=[("sample", sample)])
async def test_query_and_body_messages(fetch):
    error = assert_error(await fetch("/api/sample/widgets?page=abc&sortOrder=sideways&sortBy=colour"),
                         400, "VALIDATION_FAILED")
    assert_human(error["details"])
    assert error_fields(error) == {"page": "must be a whole number"}  # conversion fails first
    error = assert_error(await fetch("/api/sample/widgets?page=0&sortOrder=sideways&sortBy=colour"),
                         400, "VALIDATION_FAILED")
    assert_human(error["details"])
    assert error_fields(error) == {"page": "must be at least 1", "sortOrder": 'must be "asc" or "desc"',
                                   "sortBy": 'must be "name" or "size"'}

    error = assert_error(await fetch("/api/sample/widgets", method="POST", user="alice",
                                     json={"name": "w", "size": 101, "tags": list("abcdef")}),
                         400, "VALIDATION_FAILED")
    assert_human(error["details"])
    assert error_fields(error) == {"size": "must be at most 100", "tags": "must have at most 5 items"}


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=[("sample", sample)])
async def test_frame_messages(ws_connect):
    socket_ = await ws_connect(user="alice")
    reply = await socket_.request("sample-echo", {"name": "", "size": 0, "extra": 1})
    assert reply["type"] == "error" and reply["data"]["code"] == "VALIDATION_FAILED"
    assert_human(reply["data"]["details"])
    assert error_fields(reply["data"]) == {"name": "must not be empty", "size": "must be at least 1",
                                           "extra": "is not an allowed field"}
