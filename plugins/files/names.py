"""File names: what an uploader's name is cleaned to, and how a download announces it.

The name a client sends is only ever shown back (the ``originalName`` field and the
``Content-Disposition`` of a download); it never becomes a path. Still, it is cleaned so that
it cannot mislead a person or a program that saves the download: no folders, no ``..``, no
control characters, no bidirectional overrides that make ``gpj.exe`` read as ``exe.jpg``, no
hidden dot-files, at most 255 UTF-8 bytes (what file systems accept), keeping the extension.

``content_disposition`` writes RFC 6266: an ASCII ``filename=`` for old clients and the exact
name as ``filename*=UTF-8''…`` (RFC 8187) for the rest.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

__all__ = ["clean_file_name", "content_disposition", "MAX_NAME_BYTES", "FALLBACK_NAME"]

#: The longest name (in UTF-8 bytes) most file systems store.
MAX_NAME_BYTES = 255
#: What a name cleans to when nothing usable is left.
FALLBACK_NAME = "file"
# Longest extension kept whole when a long name is shortened (".jpeg", ".docx" and some room).
_MAX_EXTENSION_CHARS = 16
# Unicode categories dropped: controls (Cc), format characters (Cf: bidi overrides and
# isolates, zero-width joiners, soft hyphens), unassigned and private-use code points, and
# the line and paragraph separators.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp"})
# Windows refuses these in names; a downloaded file should save anywhere.
_RESERVED_CHARACTERS = re.compile(r'[<>:"|?*]')
_WHITESPACE = re.compile(r"\s+")
# Printable ASCII a quoted-string may hold without escapes.
_ASCII_SAFE = re.compile(r"[^A-Za-z0-9 !#$%&'()+,\-.;=@\[\]^_`{}~]")


def clean_file_name(raw: str | None) -> str:
    """The name to keep for an upload: the last path segment of ``raw``, cleaned."""
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[\\/]", name)[-1]  # a browser may send a whole path
    name = "".join(" " if ch.isspace() else ch for ch in name
                   if unicodedata.category(ch) not in _DROPPED_CATEGORIES or ch.isspace())
    name = _RESERVED_CHARACTERS.sub("_", name)
    name = _WHITESPACE.sub(" ", name).strip(" .")  # no ".." or hidden dot-files; no trailing dot
    name = _shorten(name)
    return name or FALLBACK_NAME


def _shorten(name: str) -> str:
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > _MAX_EXTENSION_CHARS:
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    budget = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    # Cut on a character boundary: decode with "ignore" drops a half-cut character.
    stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(" .")
    return stem + suffix


def ascii_fallback(name: str) -> str:
    """An ASCII stand-in for ``name``: accents dropped (``café`` → ``cafe``), any other
    character outside printable ASCII, and quotes and backslashes, as ``_``."""
    decomposed = unicodedata.normalize("NFKD", name)
    ascii_only = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    fallback = _ASCII_SAFE.sub("_", ascii_only).strip(" ")
    return fallback or FALLBACK_NAME


def content_disposition(name: str, *, inline: bool = False) -> str:
    """``attachment; filename="…"; filename*=UTF-8''…`` for a cleaned name."""
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{ascii_fallback(name)}\"; filename*=UTF-8''{quote(name, safe='')}"
