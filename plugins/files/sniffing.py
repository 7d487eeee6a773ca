"""What an upload really is, decided from its bytes against the allow-list (README: Files).

Binary formats are recognised by their signatures with ``filetype`` (pure Python); our own
checks cover what signatures cannot: plain text (valid UTF-8, no binary control characters,
nothing a browser would sniff as HTML or XML/SVG) and DOCX (a ZIP whose directory holds
``word/document.xml``: a ZIP that merely starts like one is not a document).

The client's declared type and the file name are never consulted. Anything not on the list is
refused, including HTML, SVG and scripts whatever they are named.
"""

from __future__ import annotations

import codecs
import re
import zipfile
from pathlib import Path

import filetype

__all__ = ["SNIFF_BYTES", "ALLOWED_TYPES", "IMAGE_TYPES", "TEXT_TYPE", "DOCX_TYPE", "sniff", "TextCheck",
           "confirm_structure"]

#: How much of the start of a file decides its type: filetype reads at most 8 KiB, and HTML
#: sniffing (WHATWG, and the older browsers that scanned further) looks within the first 512.
SNIFF_BYTES = 8192

TEXT_TYPE = "text/plain"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
AUDIO_TYPES = frozenset({"audio/mpeg", "audio/wav", "audio/ogg"})
ALLOWED_TYPES = IMAGE_TYPES | AUDIO_TYPES | frozenset({"application/pdf", "application/msword", DOCX_TYPE, TEXT_TYPE})

# filetype's names for what we serve under the usual ones.
_CANONICAL = {"audio/x-wav": "audio/wav"}

# Markup a browser would take for HTML or XML (and so SVG): the WHATWG MIME sniffing patterns
# at the start (after white space), and tags that older browsers found anywhere in the first
# bytes. Plain text about code may mention them later on; at the start they make it a page.
_MARKUP_AT_START = re.compile(
    rb"^\s*<(?:!doctype\s+html|html|head|script|iframe|h1|div|font|table|a|style|title|b|body|br|p|!--|\?xml|svg)[\s>/]",
    re.IGNORECASE)
_MARKUP_ANYWHERE = re.compile(rb"<(?:html|head|body|script|iframe|svg|!doctype\s+html|\?xml)[\s>/]", re.IGNORECASE)
_HTML_SCAN_BYTES = 512
# C0 controls other than tab, line feed, form feed and carriage return, and DEL: binary data.
_BINARY_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_UTF8_BOM = codecs.BOM_UTF8


def sniff(head: bytes) -> str | None:
    """The allowed MIME type ``head`` (the first ``SNIFF_BYTES`` of a file, or all of a shorter
    one) starts, or None when it is not an allowed type. Text is only provisionally allowed:
    the rest of the file must pass ``TextCheck`` too."""
    if not head:
        return None
    kind = filetype.guess_mime(head)
    if kind is not None:
        kind = _CANONICAL.get(kind, kind)
        return kind if kind in ALLOWED_TYPES else None
    return TEXT_TYPE if looks_like_text(head) else None


def looks_like_text(head: bytes) -> bool:
    """Whether the start of a file is plain text that no browser would render as markup."""
    body = head[len(_UTF8_BOM):] if head.startswith(_UTF8_BOM) else head
    if _BINARY_CONTROLS.search(body):
        return False
    if _MARKUP_AT_START.match(body) or _MARKUP_ANYWHERE.search(body[:_HTML_SCAN_BYTES]):
        return False
    # The head may end inside a character: decode it as a stream that is not finished yet.
    try:
        codecs.getincrementaldecoder("utf-8")().decode(body, final=False)
    except UnicodeDecodeError:
        return False
    return True


class TextCheck:
    """Checks a text upload chunk by chunk as it arrives: UTF-8 throughout, no binary
    controls. ``feed`` raises ``ValueError`` at the first bad byte; ``finish`` at a file that
    ends inside a character. Runs on the worker thread that writes the chunks."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def feed(self, chunk: bytes) -> None:
        if _BINARY_CONTROLS.search(chunk):
            raise ValueError("binary data in a text file")
        self._decoder.decode(chunk, final=False)  # UnicodeDecodeError is a ValueError

    def finish(self) -> None:
        self._decoder.decode(b"", final=True)


def confirm_structure(path: Path, mime_type: str) -> bool:
    """Checks that need the whole file (blocking): a DOCX must be a readable ZIP holding the
    main document part. Other types were decided by their signature."""
    if mime_type != DOCX_TYPE:
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return "word/document.xml" in names and "[Content_Types].xml" in names
