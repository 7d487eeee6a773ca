"""Access and refresh JWTs.

Both are HS256 — the algorithm is pinned on decode, so ``alg: none`` or an RS/HS confusion is
refused — signed with separate secrets (``JWT_SECRET`` for access, ``JWT_REFRESH_SECRET`` for
refresh), carry ``exp``, ``iat`` and ``sub`` (required on decode), a ``typ`` claim
(``access`` or ``refresh``: a refresh token is never accepted as access even if the secrets
were equal), ``sid`` (the server-side session it belongs to) and a unique ``jti``.

A valid signature is not enough: callers also check the session (``sessions``), which is
how a revoked session's tokens are refused at once.

``VerifiedAccessTokens`` remembers the claims of access tokens already verified, briefly and
never past their ``exp``, so a client making many requests with one token pays the signature
check once rather than on every request (it was the largest single cost of an authenticated
read). It skips only the decode: the session is still checked on every request.

This module must never log a token, and never let a PyJWT exception escape: an expired
token becomes ``TokenExpired`` (401 TOKEN_EXPIRED), anything else ``Unauthorized``.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
from collections import OrderedDict
from typing import Any

import jwt

from ..errors import TokenExpired, Unauthorized

__all__ = [
    "ALGORITHM", "ACCESS_TTL_SECONDS", "REFRESH_TTL_SECONDS", "ACCESS", "REFRESH",
    "issue_access_token", "issue_refresh_token", "decode_token", "new_jti", "token_pair",
    "looks_like_jwt", "access_ttl", "refresh_ttl", "VerifiedAccessTokens", "verified_access_tokens",
]

ALGORITHM = "HS256"
ACCESS = "access"
REFRESH = "refresh"
# The documented lifetimes, the defaults of ACCESS_TOKEN_TTL and REFRESH_TOKEN_TTL (the settings
# ``access_token_ttl`` / ``refresh_token_ttl`` decide): short-lived access tokens bound the
# damage of a leaked one even without the session check; refresh tokens rotate on every use.
ACCESS_TTL_SECONDS = 15 * 60
REFRESH_TTL_SECONDS = 7 * 24 * 3600
# Clock skew tolerated between nodes when checking exp/iat (s).
LEEWAY_SECONDS = 5
REQUIRED_CLAIMS = ["exp", "iat", "sub", "typ", "sid", "jti"]
ISSUER = "vachat"
# Verified access tokens remembered, at most (~1 KB each with the token as key: ~10 MB), and
# for how long each at most (s) -- also never past its exp. Bounded so a flood of distinct
# valid tokens cannot grow memory; short so the map holds only tokens in active use.
VERIFIED_TOKENS_MAX = 10_000
VERIFIED_TOKEN_TTL_SECONDS = 60


def new_jti() -> str:
    return secrets.token_urlsafe(16)


def access_ttl(config: Any) -> int:
    """Seconds an access token lives (``ACCESS_TOKEN_TTL``)."""
    return getattr(config, "access_token_ttl", ACCESS_TTL_SECONDS)


def refresh_ttl(config: Any) -> int:
    """Seconds a refresh token, and the session it renews, lives (``REFRESH_TOKEN_TTL``)."""
    return getattr(config, "refresh_token_ttl", REFRESH_TTL_SECONDS)


def _secret(config: Any, kind: str) -> str:
    return config.jwt_secret if kind == ACCESS else config.jwt_refresh_secret


def _issue(config: Any, kind: str, user_id: str, session_id: str, jti: str, ttl: int,
           now: float | None = None) -> str:
    """A signed ``kind`` token: our header, these claims, HMAC-SHA256 over both with the
    kind's secret. Byte for byte what PyJWT's ``encode`` writes (a test compares them), at a
    tenth of its cost: PyJWT spends ~75 us on generic work (key preparation, algorithm lookup),
    twice per sign-in and refresh, on the IOLoop."""
    issued = int(now if now is not None else time.time())
    claims = {"sub": user_id, "sid": session_id, "typ": kind, "jti": jti, "iat": issued,
              "exp": issued + ttl, "iss": ISSUER}
    payload = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode("utf-8")).rstrip(b"=")
    signing_input = f"{_ISSUED_HEADER}.{payload.decode('ascii')}"
    return f"{signing_input}.{_signature(_secret(config, kind), signing_input).decode('ascii')}"


def issue_access_token(config: Any, user_id: str, session_id: str, *, now: float | None = None) -> str:
    return _issue(config, ACCESS, user_id, session_id, new_jti(), access_ttl(config), now)


def issue_refresh_token(config: Any, user_id: str, session_id: str, jti: str, *,
                        now: float | None = None) -> str:
    return _issue(config, REFRESH, user_id, session_id, jti, refresh_ttl(config), now)


def token_pair(config: Any, user_id: str, session_id: str, refresh_jti: str) -> dict[str, Any]:
    """The ``tokens`` object of login/register/refresh answers."""
    return {
        "accessToken": issue_access_token(config, user_id, session_id),
        "refreshToken": issue_refresh_token(config, user_id, session_id, refresh_jti),
        "tokenType": "Bearer",
        "expiresIn": access_ttl(config),
        "refreshExpiresIn": refresh_ttl(config),
    }


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated segments starting with a JSON header: ours to judge (or refuse)."""
    return token.count(".") == 2 and token.startswith("eyJ")


# The header segment of every token ``_issue`` signs (PyJWT writes {"alg":"HS256","typ":"JWT"}).
_ISSUED_HEADER = jwt.encode({}, "k" * 32, algorithm=ALGORITHM).partition(".")[0]
# The claims ``_issue`` writes: a token with any other (aud, nbf, ...) is left to PyJWT.
_ISSUED_CLAIMS = frozenset(REQUIRED_CLAIMS + ["iss"])


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _signature(secret: str, signing_input: str) -> bytes:
    """The HS256 signature segment of ``signing_input`` (header.payload): base64url, unpadded."""
    mac = hmac.digest(secret.encode("utf-8"), signing_input.encode("ascii"), "sha256")
    return base64.urlsafe_b64encode(mac).rstrip(b"=")


def _issued_claims(secret: str, token: str, now: float) -> dict[str, Any] | None:
    """The claims of ``token`` if it is exactly what ``_issue`` makes (our header, our claims
    and nothing else, integer times) and passes every check PyJWT would make; None for any
    other token, valid or not, which PyJWT then judges (and says why it refuses it).

    PyJWT's decode costs ~90 us, most of it generic work (key preparation, algorithm lookup,
    options merging): a third of a WebSocket's connect + authenticate. This accepts a strict
    subset of what PyJWT accepts: the signature is HMAC-SHA256 of the first two segments with
    the secret, compared in constant time against its canonical base64url form."""
    header, _, rest = token.partition(".")
    if header != _ISSUED_HEADER:
        return None
    payload_segment, _, signature = rest.partition(".")
    try:
        if not hmac.compare_digest(_signature(secret, f"{header}.{payload_segment}"), signature.encode("ascii")):
            return None
        claims = json.loads(_b64decode(payload_segment))
    except (ValueError, UnicodeError):  # binascii.Error and JSONDecodeError are ValueErrors
        return None
    if type(claims) is not dict or claims.keys() != _ISSUED_CLAIMS:
        return None
    iat, exp = claims["iat"], claims["exp"]
    if type(iat) is not int or type(exp) is not int or iat > now + LEEWAY_SECONDS or exp <= now - LEEWAY_SECONDS:
        return None  # PyJWT says which: not yet valid, or TokenExpired
    if claims["iss"] != ISSUER or not all(type(claims[name]) is str for name in ("sub", "jti", "sid", "typ")):
        return None
    return claims


def decode_token(config: Any, token: str, kind: str) -> dict[str, Any]:
    """The claims of a valid ``kind`` token; ``TokenExpired`` or ``Unauthorized`` otherwise."""
    claims = _issued_claims(_secret(config, kind), token, time.time()) if type(token) is str else None
    if claims is None:
        try:
            claims = jwt.decode(
                token, _secret(config, kind), algorithms=[ALGORITHM], issuer=ISSUER,
                leeway=LEEWAY_SECONDS, options={"require": REQUIRED_CLAIMS + ["iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("The token has expired") from None
        except Exception:  # InvalidTokenError and its family, or a malformed segment
            raise Unauthorized("Invalid token") from None
    if claims.get("typ") != kind:
        raise Unauthorized("Invalid token type")
    for claim in ("sub", "sid", "jti"):
        if not isinstance(claims.get(claim), str) or not claims[claim]:
            raise Unauthorized("Invalid token")
    return claims


class VerifiedAccessTokens:
    """Claims of access tokens that passed ``decode_token``, keyed by the token itself, each
    kept until the earlier of its ``exp`` and ``ttl`` seconds after it was verified; a bounded
    LRU. Only valid tokens get in: a refused one is decoded (and refused) every time."""

    def __init__(self, max_entries: int = VERIFIED_TOKENS_MAX, ttl: float = VERIFIED_TOKEN_TTL_SECONDS) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._claims: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._claims)

    def __contains__(self, token: str) -> bool:
        return token in self._claims

    def claims(self, config: Any, token: str, *, now: float | None = None, remember: bool = True) -> dict[str, Any]:
        """``decode_token(config, token, ACCESS)``, from memory when this token was verified
        recently and has not expired. ``remember=False`` for a token presented once (a
        WebSocket's): it is looked up but not kept, so 10,000 sockets do not leave 10,000
        entries (~1.5 KiB each) behind."""
        moment = time.time() if now is None else now
        entry = self._claims.get(token)
        if entry is not None:
            if entry[0] > moment:
                self._claims.move_to_end(token)
                return entry[1]
            del self._claims[token]
        claims = decode_token(config, token, ACCESS)
        until = min(float(claims["exp"]), moment + self.ttl)
        if remember and until > moment:  # within the leeway past exp: valid, but not remembered
            self._claims[token] = (until, claims)
            while len(self._claims) > self.max_entries:
                self._claims.popitem(last=False)
        return claims


def verified_access_tokens(app: Any) -> VerifiedAccessTokens:
    """The application's memory of verified access tokens, made on first use."""
    state = app.plugin_state("accounts")
    verified = getattr(state, "verified_access_tokens", None)
    if verified is None:
        verified = state.verified_access_tokens = VerifiedAccessTokens()
    return verified
