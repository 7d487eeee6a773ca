"""Security review: hostile input through the real server must get a clean 4xx, never a 500,
on SQLite and PostgreSQL alike."""


import pytest

from tests.plugins import sample
from vachat.testing import assert_error, error_fields

pytestmark = pytest.mark.vachat(plugins=[("sample", sample)])

STRONG = "Correct-Horse-7!"
JSON = {"Content-Type": "application/json"}


async def post_raw(fetch, path, text, **kwargs):
    return await fetch(path, method="POST", body=text.encode("utf-8", "surrogatepass"), headers=JSON, **kwargs)


@pytest.mark.gen_test
async def test_deeply_nested_body_is_a_400(fetch):
    response = await post_raw(fetch, "/api/auth/login", "[" * 100_000 + "]" * 100_000)
    assert_error(response, 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
async def test_lone_surrogate_password_is_a_clean_answer(fetch, make_user):
    user = await make_user()
    login = await post_raw(fetch, "/api/auth/login",
                           '{"email": "%s", "password": "Aa1!\\ud800xyz"}' % user.email)
    assert login.code in (400, 401), login.body
    register = await post_raw(fetch, "/api/auth/register",
                              '{"email": "new@example.test", "password": "Aa1!\\udfffxyzQ"}')
    assert_error(register, 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
async def test_nul_in_strings_is_a_400(fetch, make_user):
    user = await make_user()
    login = await fetch("/api/auth/login", method="POST", json={"email": "a\u0000@example.test", "password": STRONG})
    assert login.code in (400, 401), login.body
    profile = await fetch("/api/users/profile", method="PUT", json={"bio": "hi\u0000there"},
                          headers=user.auth_headers)
    assert_error(profile, 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
async def test_nul_in_a_query_parameter_is_a_400(fetch):
    body = assert_error(await fetch("/api/sample/widgets?sortBy=na%00me"), 400, "VALIDATION_FAILED")
    assert "sortBy" in error_fields(body)


@pytest.mark.gen_test
async def test_api_key_expiry_at_the_edge_of_the_calendar(fetch, make_user):
    user = await make_user()
    for moment in ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2030-13-01T00:00:00Z"):
        response = await fetch("/api/auth/api-keys", method="POST", json={"name": "k", "expiresAt": moment},
                               headers=user.auth_headers)
        assert_error(response, 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
async def test_username_with_trailing_newline_is_refused(fetch):
    response = await fetch("/api/auth/register", method="POST",
                           json={"email": "nl@example.test", "password": STRONG, "username": "alice\n"})
    assert_error(response, 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
async def test_register_checks_the_time_zone_like_the_profile(fetch):
    response = await fetch("/api/auth/register", method="POST",
                           json={"email": "tz@example.test", "password": STRONG, "timezone": "Not/AZone"})
    body = assert_error(response, 400, "VALIDATION_FAILED")
    assert "timezone" in error_fields(body)


@pytest.mark.gen_test
async def test_email_that_lowercases_past_the_column_width_is_a_400(fetch):
    # "İ".lower() is two code points: 200 of them become 400, past varchar(254) on PostgreSQL.
    email = "\u0130" * 200 + "@example.test"
    response = await fetch("/api/auth/register", method="POST", json={"email": email, "password": STRONG})
    body = assert_error(response, 400, "VALIDATION_FAILED")
    assert "email" in error_fields(body)


@pytest.mark.gen_test
async def test_unknown_fields_do_not_amplify_the_error(fetch):
    body = {"email": "a@example.test", "password": STRONG, **{f"x{i}": 0 for i in range(5000)}}
    response = await fetch("/api/auth/login", method="POST", json=body)
    error = assert_error(response, 400, "VALIDATION_FAILED")
    assert 1 <= len(error["details"]) <= 20


@pytest.mark.gen_test(timeout=10)
async def test_an_array_of_wrong_items_is_refused_quickly(fetch):
    # 250,000 failing items: each error costs ~50 µs to build, seconds of IOLoop if all are.
    response = await fetch("/api/sample/widgets", method="POST", user="alice",
                           json={"name": "a", "size": 3, "tags": [1] * 250_000})
    error = assert_error(response, 400, "VALIDATION_FAILED")
    assert 1 <= len(error["details"]) <= 20
