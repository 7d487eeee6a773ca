"""Passwords: the policy, the common-password check, and bcrypt off the IOLoop.

Policy: at least 8 characters with an upper-case letter, a lower-case letter, a
digit and a special character; not a common password (the bundled list, also after undoing
the usual disguises: case, leetspeak and digits or symbols stuck on either end, so
``P@ssw0rd2024!`` counts as ``password``); not built from the account's e-mail address.

The 72-byte rule: bcrypt only reads the first 72 bytes of a password, and bcrypt ≥ 5 raises
on longer input. We neither truncate silently nor pre-hash: a new password over 72 bytes of
UTF-8 is refused by ``check_policy`` with VALIDATION_FAILED naming ``password`` (72 bytes
is 72 ASCII characters, or 18-36 characters of other scripts, ample for a passphrase
generator's output). Since no stored password can be longer, ``verify_password`` answers
False for such input — after the same bcrypt work as any other attempt, so its timing tells
nothing — and never raises.

Unicode: every function here takes the password's NFC form (``identity.normalize_password``)
before measuring, checking or hashing it, so the same characters typed composed (é) or
decomposed (e + ◌́), as some keyboards and operating systems send them, are the same password.

This module must never log or return a password, never run bcrypt on the IOLoop thread,
and never let bcrypt's exceptions reach a request (a 500).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import bcrypt

from ..errors import ValidationFailed
from .identity import normalize_password

__all__ = [
    "check_policy", "policy_problems", "is_common", "hash_password", "verify_password",
    "dummy_verify", "MIN_LENGTH", "MAX_BYTES", "COMMON_PASSWORDS_FILE",
]

MIN_LENGTH = 8
# bcrypt reads at most 72 bytes; see the module docstring for why longer ones are refused.
MAX_BYTES = 72
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")
# A fragment of the e-mail's local part shorter than this is too common ("jo", "al") to
# forbid inside a password.
MIN_EMAIL_FRAGMENT = 4
# Leetspeak substitutions undone before the common-password lookup.
_UNLEET = str.maketrans({"@": "a", "4": "a", "3": "e", "1": "i", "!": "i", "0": "o", "$": "s",
                         "5": "s", "7": "t", "+": "t", "8": "b", "9": "g"})
_LETTER = re.compile(r"[^\W\d_]")


def _strip_edge_junk(text: str) -> str:
    r"""``text`` without the digits and symbols at either end ("!!dragon2024" → "dragon").
    Found by searching for the first letter from each end: a pattern such as ``[\W\d_]+$``
    would rescan a long run of symbols from each of its characters (quadratic)."""
    first = _LETTER.search(text)
    if first is None:
        return ""
    last = _LETTER.search(text[::-1])
    return text[first.start():len(text) - last.start()]


@functools.lru_cache(maxsize=1)
def _common() -> frozenset[str]:
    words = set()
    for line in COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines():
        line = line.strip().lower()
        if line and not line.startswith("#"):
            words.add(line)
    return frozenset(words)


def is_common(password: str) -> bool:
    """Whether ``password`` is on the common list, as typed or once its disguise is removed."""
    common = _common()
    lowered = password.lower()
    if lowered in common:
        return True
    stripped = _strip_edge_junk(lowered)
    candidates = {stripped, _strip_edge_junk(lowered.translate(_UNLEET)), lowered.translate(_UNLEET)}
    # Strip the edges before undoing leetspeak too: "Dragon2024!" and "Dr@g0n!" both count.
    candidates.add(stripped.translate(_UNLEET))
    return any(len(word) >= 3 and word in common for word in candidates)


def policy_problems(password: str, *, email: str | None = None) -> list[str]:
    """Every rule ``password`` breaks, as messages for the ``password`` field (empty: fine)."""
    password = normalize_password(password)
    problems = []
    if len(password.encode("utf-8")) > MAX_BYTES:
        problems.append(f"must be at most {MAX_BYTES} bytes (UTF-8)")
    if len(password) < MIN_LENGTH:
        problems.append(f"must be at least {MIN_LENGTH} characters")
    if not re.search(r"[A-Z]", password):
        problems.append("must contain an upper-case letter")
    if not re.search(r"[a-z]", password):
        problems.append("must contain a lower-case letter")
    if not re.search(r"\d", password):
        problems.append("must contain a digit")
    if not re.search(r"[^A-Za-z0-9]", password) or password.isspace():
        problems.append("must contain a special character")
    if is_common(password):
        problems.append("is too common; choose a less guessable password")
    if email:
        local = email.split("@")[0].lower()
        fragments = [part for part in re.split(r"[^a-z0-9]+", local) if len(part) >= MIN_EMAIL_FRAGMENT]
        if len(local) >= MIN_EMAIL_FRAGMENT:
            fragments.append(local)
        if any(fragment in password.lower() for fragment in fragments):
            problems.append("must not contain your e-mail address")
    return problems


def check_policy(password: str, *, email: str | None = None, field: str = "password") -> None:
    """Raise ``ValidationFailed`` (one detail per broken rule, naming ``field``) unless
    ``password`` meets the policy."""
    problems = policy_problems(password, email=email)
    if problems:
        raise ValidationFailed("The password does not meet the password policy",
                               details=[{"field": field, "message": message} for message in problems])


def _hash(password: str, rounds: int) -> str:
    return bcrypt.hashpw(normalize_password(password).encode("utf-8"), bcrypt.gensalt(rounds)).decode("ascii")


def _check(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # a malformed stored hash, or a password bcrypt refuses
        return False


@functools.lru_cache(maxsize=8)
def _dummy_hash(rounds: int) -> bytes:
    """A hash at the configured cost to check against when there is no real one, so an
    unknown account costs the same time as a known one."""
    return bcrypt.hashpw(b"vachat-dummy-password", bcrypt.gensalt(rounds))


async def hash_password(app: Any, password: str) -> str:
    """The bcrypt hash of ``password`` at ``BCRYPT_ROUNDS``, computed off the IOLoop.

    Call ``check_policy`` first; a password over 72 bytes is refused here too.
    """
    if len(normalize_password(password).encode("utf-8")) > MAX_BYTES:
        raise ValidationFailed("The password is too long",
                               details=[{"field": "password", "message": f"must be at most {MAX_BYTES} bytes (UTF-8)"}])
    return await app.run_hashing(_hash, password, app.config.bcrypt_rounds)


async def verify_password(app: Any, password: str, hashed: str | None) -> bool:
    """Whether ``password`` matches ``hashed``; bcrypt runs off the IOLoop. Never raises.

    With no hash (unknown account) or a password over 72 bytes (never stored), a dummy hash
    is checked instead and the answer is False: the same work, the same time.
    """
    encoded = normalize_password(password).encode("utf-8")
    if hashed is None or len(encoded) > MAX_BYTES:
        await dummy_verify(app)
        return False
    return await app.run_hashing(_check, encoded, hashed.encode("ascii", "replace"))


async def dummy_verify(app: Any) -> None:
    """Spend one bcrypt check's time at the configured cost (for paths that must take as
    long as a real check: unknown e-mails at login, forgot-password for unknown addresses)."""
    dummy = await app.run_hashing(_dummy_hash, app.config.bcrypt_rounds)
    await app.run_hashing(_check, b"not-the-password", dummy)
