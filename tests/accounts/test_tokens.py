"""Forged, mistyped and expired tokens, through the real server (REST and WebSocket).

Every token here is signed (or not) by the test itself, so each case isolates one rule:
the algorithm is pinned to HS256, the access secret is required, exp/iat/sub are required,
a refresh token is never an access token, and a valid signature still needs a live session.
"""

import base64
import datetime
import json
import time

import jwt
import pytest

from vachat.accounts import tokens
from vachat.testing import TEST_REFRESH_SECRET, TEST_SECRET, assert_error


def claims_for(user, **changes):
    moment = int(time.time())
    claims = {"sub": user.id, "sid": user.session_id, "typ": "access", "jti": "j1", "iat": moment,
              "exp": moment + 600, "iss": "vachat"}
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


def sign(claims, key=TEST_SECRET, algorithm="HS256", headers=None):
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def me(fetch, token):
    return await fetch("/api/auth/me", headers={"Authorization": f"Bearer {token}"})


@pytest.mark.gen_test
async def test_a_correctly_signed_token_works(fetch, make_user):
    user = await make_user()
    assert (await me(fetch, sign(claims_for(user)))).code == 200


@pytest.mark.gen_test
async def test_alg_none_is_refused(fetch, make_user):
    user = await make_user()
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims_for(user))}."
    assert_error(await me(fetch, unsigned), 401, "UNAUTHORIZED")
    also_unsigned = jwt.encode(claims_for(user), None, algorithm="none")
    assert_error(await me(fetch, also_unsigned), 401, "UNAUTHORIZED")


# The test secret is long enough for HS256, not for HS512; that is beside the point here.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.gen_test
async def test_wrong_key_and_other_algorithms_are_refused(fetch, make_user):
    user = await make_user()
    assert_error(await me(fetch, sign(claims_for(user), key="another-secret-" + "z" * 40)), 401, "UNAUTHORIZED")
    # The right secret with another HMAC: still refused, the algorithm is pinned.
    assert_error(await me(fetch, sign(claims_for(user), algorithm="HS512")), 401, "UNAUTHORIZED")
    # Signed with the refresh secret: not an access token.
    assert_error(await me(fetch, sign(claims_for(user), key=TEST_REFRESH_SECRET)), 401, "UNAUTHORIZED")


@pytest.mark.gen_test
async def test_tampered_payload_is_refused(fetch, make_user):
    user, other = await make_user(), await make_user()
    header, _, signature = user.access_token.split(".")
    forged = f"{header}.{b64(claims_for(other, sid=other.session_id))}.{signature}"
    assert_error(await me(fetch, forged), 401, "UNAUTHORIZED")


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "sid", "typ", "jti"])
@pytest.mark.gen_test
async def test_required_claims(fetch, make_user, missing):
    user = await make_user()
    assert_error(await me(fetch, sign(claims_for(user, **{missing: None}))), 401, "UNAUTHORIZED")


@pytest.mark.gen_test
async def test_refresh_token_is_not_an_access_token(fetch, make_user, ws_connect):
    user = await make_user()
    assert_error(await me(fetch, user.refresh_token), 401, "UNAUTHORIZED")
    # Even with the access secret and everything else right, typ decides.
    assert_error(await me(fetch, sign(claims_for(user, typ="refresh"))), 401, "UNAUTHORIZED")
    socket = await ws_connect(headers={"Authorization": f"Bearer {user.refresh_token}"})
    assert (await socket.closed())[0] == 4401


@pytest.mark.gen_test
async def test_expired_access_token_is_token_expired(fetch, make_user, ws_connect):
    user = await make_user()
    long_ago = int(time.time()) - 3600
    expired = sign(claims_for(user, iat=long_ago, exp=long_ago + 900))
    body = assert_error(await me(fetch, expired), 401, "TOKEN_EXPIRED")
    assert body["error"]
    socket = await ws_connect(headers={"Authorization": f"Bearer {expired}"})
    code, reason = await socket.closed()
    assert code == 4401 and "expired" in reason.lower()
    # Over the socket's auth frame too.
    late = await ws_connect()
    reply = await late.request("auth", {"token": expired})
    assert reply["type"] == "error" and reply["data"]["code"] == "TOKEN_EXPIRED"
    assert (await late.closed())[0] == 4401


@pytest.mark.gen_test
async def test_expired_refresh_token_is_token_expired(fetch, make_user):
    user = await make_user()
    long_ago = int(time.time()) - 8 * 24 * 3600
    expired = sign(claims_for(user, typ="refresh", iat=long_ago, exp=long_ago + 7 * 24 * 3600),
                   key=TEST_REFRESH_SECRET)
    assert_error(await fetch("/api/auth/refresh", method="POST", json={"refreshToken": expired}),
                 401, "TOKEN_EXPIRED")


@pytest.mark.gen_test
async def test_a_valid_signature_still_needs_a_live_session_of_that_user(fetch, make_user):
    user, other = await make_user(), await make_user()
    assert_error(await me(fetch, sign(claims_for(user, sid="01HNOSUCHSESSION0000000000"))), 401, "UNAUTHORIZED")
    # A real session, but someone else's.
    assert_error(await me(fetch, sign(claims_for(user, sid=other.session_id))), 401, "UNAUTHORIZED")


@pytest.mark.gen_test
async def test_malformed_authorization_headers(fetch):
    for value in ["Bearer", "Bearer ", "Bearer eyJ.not.base64!", "Bearer a.b.c", "Basic dXNlcjpwYXNz",
                  "Bearer eyJhbGciOiJIUzI1NiJ9", "Bearer " + "eyJ" + "A" * 5000 + ".x.y"]:
        response = await fetch("/api/auth/me", headers={"Authorization": value})
        assert_error(response, 401, "UNAUTHORIZED")


@pytest.mark.gen_test
async def test_websocket_auth_frame_with_an_access_token(make_user, ws_connect):
    user = await make_user()
    socket = await ws_connect()
    reply = await socket.request("auth", {"token": user.access_token})
    assert reply["type"] == "ack" and reply["data"] == {"userId": user.id, "sessionId": user.session_id}
    refused = await ws_connect()
    reply = await refused.request("auth", {"token": user.refresh_token})
    assert reply["type"] == "error" and reply["data"]["code"] == "UNAUTHORIZED"
    assert (await refused.closed())[0] == 4401


def test_issued_tokens_carry_the_claims(app):
    token = tokens.issue_access_token(app.config, "U1", "S1")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    claims = jwt.decode(token, TEST_SECRET, algorithms=["HS256"], issuer="vachat")
    assert claims["typ"] == "access" and claims["sub"] == "U1" and claims["sid"] == "S1"
    assert claims["exp"] - claims["iat"] == 15 * 60 and claims["jti"]
    refresh = tokens.issue_refresh_token(app.config, "U1", "S1", "J1")
    refresh_claims = jwt.decode(refresh, TEST_REFRESH_SECRET, algorithms=["HS256"], issuer="vachat")
    assert refresh_claims["typ"] == "refresh" and refresh_claims["exp"] - refresh_claims["iat"] == 7 * 24 * 3600


def test_issued_tokens_are_what_pyjwt_writes_byte_for_byte(app):
    """Tokens are signed by our own HMAC-SHA256, not PyJWT's generic encoder: the same bytes."""
    moment = 1_700_000_000
    for kind, issue, secret, ttl in (
            ("access", lambda: tokens.issue_access_token(app.config, "U1", "S1", now=moment), TEST_SECRET, 15 * 60),
            ("refresh", lambda: tokens.issue_refresh_token(app.config, "U1", "S1", "J1", now=moment),
             TEST_REFRESH_SECRET, 7 * 24 * 3600)):
        token = issue()
        jti = jwt.decode(token, options={"verify_signature": False})["jti"]
        claims = {"sub": "U1", "sid": "S1", "typ": kind, "jti": jti, "iat": moment, "exp": moment + ttl,
                  "iss": "vachat"}
        assert token == jwt.encode(claims, secret, algorithm="HS256"), kind


@pytest.mark.gen_test
@pytest.mark.vachat(config={"access_token_ttl": 120, "refresh_token_ttl": 3600})
async def test_token_lifetimes_come_from_the_settings(fetch, make_user):
    user = await make_user()
    signed_in = await fetch("/api/auth/login", method="POST", json={"email": user.email, "password": user.password})
    pair = signed_in.data["tokens"]
    assert pair["expiresIn"] == 120 and pair["refreshExpiresIn"] == 3600
    access = jwt.decode(pair["accessToken"], TEST_SECRET, algorithms=["HS256"], issuer="vachat")
    refresh = jwt.decode(pair["refreshToken"], TEST_REFRESH_SECRET, algorithms=["HS256"], issuer="vachat")
    assert access["exp"] - access["iat"] == 120 and refresh["exp"] - refresh["iat"] == 3600
    sessions = (await fetch("/api/auth/sessions", user=signed_in)).data
    mine = next(s for s in sessions if s["id"] == signed_in.data["sessionId"])
    expires = datetime.datetime.fromisoformat(mine["expiresAt"].replace("Z", "+00:00")).timestamp()
    assert abs(expires - (time.time() + 3600)) < 60  # the session lives as long as its refresh token
    rotated = (await fetch("/api/auth/refresh", method="POST", json={"refreshToken": pair["refreshToken"]})).data
    assert rotated["tokens"]["expiresIn"] == 120


def test_a_refresh_token_must_outlive_the_access_token():
    from vachat.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="REFRESH_TOKEN_TTL"):
        load_settings(environ={"ACCESS_TOKEN_TTL": "600", "REFRESH_TOKEN_TTL": "600"})


# -- verified access tokens are remembered (the signature is checked once), never the session --


@pytest.mark.gen_test
async def test_a_remembered_token_of_a_revoked_session_is_refused_at_once(app, fetch, make_user):
    user = await make_user()
    assert (await me(fetch, user.access_token)).code == 200
    assert user.access_token in tokens.verified_access_tokens(app)  # the next request skips the decode
    assert (await fetch("/api/auth/logout", method="POST", headers=user.auth_headers)).code == 200
    assert_error(await me(fetch, user.access_token), 401, "UNAUTHORIZED")


@pytest.mark.gen_test
async def test_remembered_tokens_end_at_their_exp_and_are_bounded(app, make_user, monkeypatch):
    user = await make_user()
    decoded = []
    real_decode = tokens.decode_token
    monkeypatch.setattr(tokens, "decode_token", lambda *args: decoded.append(args[1]) or real_decode(*args))
    verified = tokens.VerifiedAccessTokens(max_entries=2)
    soon = time.time() - tokens.ACCESS_TTL_SECONDS + 30  # issued so that it expires in 30 s
    short = tokens.issue_access_token(app.config, user.id, user.session_id, now=soon)
    exp = jwt.decode(short, options={"verify_signature": False})["exp"]
    assert verified.claims(app.config, short, now=exp - 10)["sub"] == user.id
    assert verified.claims(app.config, short, now=exp - 1)["sub"] == user.id
    assert decoded == [short]  # verified once
    verified.claims(app.config, short, now=exp)  # at exp: decoded again, and no longer kept
    assert decoded == [short, short] and short not in verified
    others = [tokens.issue_access_token(app.config, user.id, user.session_id) for _ in range(3)]
    for token in others:
        verified.claims(app.config, token)
    assert len(verified) == 2 and others[0] not in verified
    with pytest.raises(Exception) as refused:
        verified.claims(app.config, others[1] + "x")
    assert refused.value.status == 401 and others[1] + "x" not in verified


@pytest.mark.gen_test
async def test_a_sockets_token_is_verified_without_being_remembered(app, make_user, ws_connect):
    upgraded, by_frame = await make_user(), await make_user()
    await ws_connect(upgraded)  # the token in the upgrade's Authorization header
    socket = await ws_connect()
    assert (await socket.request("auth", {"token": by_frame.access_token}))["type"] == "ack"
    remembered = tokens.verified_access_tokens(app)
    assert upgraded.access_token not in remembered and by_frame.access_token not in remembered


def _resigned(token, key=TEST_SECRET):
    """``token``'s first two segments signed again with ``key`` (canonical base64url)."""
    import hashlib
    import hmac

    head, payload, _ = token.split(".")
    mac = hmac.new(key.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return f"{head}.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_the_issued_token_fast_path_accepts_only_what_pyjwt_accepts(app):
    """``_issued_claims`` (the fast check of tokens shaped as we issue them) agrees with PyJWT
    on our tokens and declines anything else, leaving PyJWT to refuse it (or accept it)."""
    now = time.time()
    issued = tokens.issue_access_token(app.config, "u1", "s1")
    assert tokens._issued_claims(TEST_SECRET, issued, now) == jwt.decode(
        issued, TEST_SECRET, algorithms=["HS256"], issuer="vachat")
    moment = int(now)
    ours = {"sub": "u1", "sid": "s1", "typ": "access", "jti": "j", "iat": moment, "exp": moment + 600, "iss": "vachat"}
    head, payload, signature = issued.split(".")
    declined = {
        "another key": sign(ours, key="another-secret-" + "z" * 40),
        "a tampered payload": f"{head}.{b64(dict(ours, sub='u2'))}.{signature}",
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(ours)}.",
        "a padded signature": issued + "=",
        "an audience": sign(dict(ours, aud="someone")),
        "not before": sign(dict(ours, nbf=moment)),
        "a claim missing": sign({k: v for k, v in ours.items() if k != "jti"}),
        "float times": sign(dict(ours, exp=moment + 600.5)),
        "issued in the future": sign(dict(ours, iat=moment + 60)),
        "expired": sign(dict(ours, exp=moment - 60)),
        "another issuer": sign(dict(ours, iss="else")),
        "a number for a subject": sign(dict(ours, sub=7)),
        "a header with a kid": sign(ours, headers={"kid": "1"}),
        "not base64": f"{head}.{payload}!.{signature}",
    }
    for why, token in declined.items():
        assert tokens._issued_claims(TEST_SECRET, token, now) is None, why
    assert tokens._issued_claims(TEST_SECRET, _resigned(issued), now) is not None  # the helper is right
    for why in ("another key", "a tampered payload", "alg none", "an audience", "a claim missing",
                "issued in the future", "another issuer", "a number for a subject"):
        with pytest.raises(Exception) as refused:
            tokens.decode_token(app.config, declined[why], tokens.ACCESS)
        assert type(refused.value).__name__ == "Unauthorized", why
    with pytest.raises(Exception) as expired:
        tokens.decode_token(app.config, declined["expired"], tokens.ACCESS)
    assert type(expired.value).__name__ == "TokenExpired"
    # Valid tokens the fast path declines are still PyJWT's to accept.
    assert tokens.decode_token(app.config, declined["a header with a kid"], tokens.ACCESS)["sub"] == "u1"
