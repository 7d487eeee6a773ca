"""Receiving one multipart upload as it streams in, without ever holding it.

``UploadReceiver`` is handed the request body chunk by chunk. Each chunk goes through
python-multipart's push parser *on a worker thread* (``app.run_blocking``), together with
everything else it costs: the file part's bytes are hashed, checked and appended to the
storage backend's ``PendingObject`` there, so the IOLoop only waits. The handler awaits each
chunk before Tornado reads the next one, so a slow disk slows the sender instead of filling
memory.

Refusals happen as early as the bytes allow: the type once the first ``SNIFF_BYTES`` of the
file are in (415), the size the moment the count passes the limit or the quota left (413), a
malformed body as soon as the parser sees it (400). Whatever happens, ``discard`` leaves no
temporary file behind; only ``commit`` keeps one.

Only one worker call per upload is ever in flight, so the parser state needs no lock.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from vachat.plugin_api import App, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

from .names import clean_file_name
from .sniffing import IMAGE_TYPES, SNIFF_BYTES, TEXT_TYPE, TextCheck, sniff
from .storage import PendingObject, StorageBackend

__all__ = ["UploadReceiver", "Received", "multipart_boundary", "form_flag", "FIELD_MAX_BYTES", "MULTIPART_OVERHEAD"]

#: Largest value of a plain form field (``description`` and the flags): a description is
#: capped at 1,000 characters, which UTF-8 may take four bytes each for.
FIELD_MAX_BYTES = 4096
#: Parts an upload may have: the file and a handful of fields, never a stream of empty parts.
MAX_PARTS = 8
#: Body bytes allowed beyond the file itself: the part headers, the boundaries and up to
#: ``MAX_PARTS`` small fields. A body over the file's limit plus this is a 413 (with the error
#: envelope, chunked or not: the handler counts the bytes, see ``StreamingBodyHandler``).
MULTIPART_OVERHEAD = 64 * 1024
#: Extensions that say "picture": content under such a name must sniff as an allowed image.
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "jpe", "png", "gif", "webp", "svg", "svgz", "bmp", "ico", "tif",
                              "tiff", "avif", "heic", "apng"})
# The most a boundary may be (RFC 2046 §5.1.1).
_MAX_BOUNDARY = 70


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` body; 415 for any other content type."""
    media_type, options = parse_options_header(content_type or "")
    if media_type != b"multipart/form-data":
        raise UnsupportedMediaType("Send the upload as multipart/form-data with the file in the field \"file\"")
    boundary = options.get(b"boundary", b"")
    if not boundary or len(boundary) > _MAX_BOUNDARY:
        raise ValidationFailed("The multipart boundary is missing or too long",
                               details=[{"field": "Content-Type", "message": "must name a boundary of 1 to 70 characters"}])
    return boundary


@dataclass
class Received:
    """What a complete upload brought: the file (still pending) and the form fields."""

    pending: PendingObject
    original_name: str
    mime_type: str
    size: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)


class _Refused(Exception):
    """Carries an ``ApiError`` out of the parser's callbacks."""


class UploadReceiver:
    def __init__(self, app: App, storage: StorageBackend, boundary: bytes, *, file_field: str,
                 fields: frozenset[str], max_file_size: int, bytes_allowed: int,
                 allowed_types: frozenset[str], quota_message: str) -> None:
        self._app = app
        self._storage = storage
        self._file_field = file_field
        self._field_names = fields
        self._max_file_size = max_file_size
        self._bytes_allowed = bytes_allowed  # what the quota leaves, at most the file limit
        self._allowed_types = allowed_types
        self._quota_message = quota_message
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        })
        self.fields: dict[str, str] = {}
        self.pending: PendingObject | None = None
        self._file_name = ""
        self._claims_image = False
        self._mime_type: str | None = None
        self._head = bytearray()
        self._size = 0
        self._digest = hashlib.sha256()
        self._text: TextCheck | None = None
        self._parts = 0
        self._ended = False
        self._file_done = False
        self._kept = False
        self._discarded = False
        self._inflight: asyncio.Future[None] | None = None
        # the part being parsed (the value's buffer is not named _header_value: that is the
        # parser's callback, which an attribute of the same name would shadow)
        self._header_name = bytearray()
        self._header_value_buffer = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._current: str | None = None  # "file", a field name, or None before headers end
        self._value = bytearray()

    # -- driven by the handler (IOLoop) ----------------------------------------

    async def feed(self, chunk: bytes) -> None:
        """Parse ``chunk`` and store its file bytes (on a worker thread)."""
        if self._discarded:
            return
        self._inflight = asyncio.ensure_future(self._app.run_blocking(self._consume, chunk))
        await self._inflight

    async def finish(self) -> Received:
        """After the whole body arrived: the finished, checked upload (still pending)."""
        await self._app.run_blocking(self._finish)
        assert self.pending is not None and self._mime_type is not None
        return Received(self.pending, self._file_name, self._mime_type, self._size,
                        self._digest.hexdigest(), dict(self.fields))

    def keep(self) -> None:
        """The pending object was committed (or handed on): ``discard`` must not touch it."""
        self._kept = True

    async def discard(self) -> None:
        """Remove the temporary file, after any write still running. Idempotent."""
        if self._discarded or self._kept:
            return
        self._discarded = True
        if self._inflight is not None and not self._inflight.done():
            await asyncio.wait([self._inflight])
        if self.pending is not None:
            await self.pending.discard()

    # -- on the worker thread ----------------------------------------------------

    def _consume(self, chunk: bytes) -> None:
        if self._discarded:
            return
        try:
            self._parser.write(chunk)
        except _Refused as refused:
            raise refused.args[0] from None
        except MultipartParseError:
            raise ValidationFailed("Malformed multipart body", details=[{"field": "(body)", "message": "is not valid multipart/form-data"}]) from None

    def _finish(self) -> None:
        if not self._ended:
            raise ValidationFailed("The multipart body ended early", details=[{"field": "(body)", "message": "is incomplete"}])
        if self.pending is None or not self._file_done:
            raise ValidationFailed("No file was sent", details=[{"field": self._file_field, "message": "is required"}])
        if self._text is not None:
            try:
                self._text.finish()
            except ValueError:
                raise self._unsupported() from None
        self.pending.close()

    # -- parser callbacks (worker thread) ------------------------------------------

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise _Refused(ValidationFailed("Too many parts in the upload", details=[{"field": "(body)", "message": f"must have at most {MAX_PARTS} parts"}]))
        self._headers = {}
        self._current = None
        self._value = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value_buffer += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._header_name).strip().lower()] = bytes(self._header_value_buffer).strip()
        self._header_name = bytearray()
        self._header_value_buffer = bytearray()

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b"").decode("latin-1"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if disposition != b"form-data" or not name:
            raise _Refused(ValidationFailed("Each part needs a form-data name", details=[{"field": "(body)", "message": "has a part without a name"}]))
        if name == self._file_field:
            if self.pending is not None:
                raise _Refused(ValidationFailed("Send one file per upload", details=[{"field": name, "message": "must be sent once"}]))
            self._file_name = clean_file_name(options.get(b"filename", b"").decode("utf-8", "replace"))
            declared_type = self._headers.get(b"content-type", b"").decode("latin-1").strip().lower()
            self._claims_image = declared_type.startswith("image/") or \
                self._file_name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS
            self.pending = self._storage.create()
            self._current = self._file_field
        elif name in self._field_names:
            if name in self.fields:
                raise _Refused(ValidationFailed("A field was sent twice", details=[{"field": name, "message": "must be sent once"}]))
            self._current = name
        else:
            raise _Refused(ValidationFailed("Unknown field in the upload", details=[{"field": name[:100], "message": "is not an allowed field"}]))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is None:
            return
        if self._current != self._file_field:
            self._value += data[start:end]
            if len(self._value) > FIELD_MAX_BYTES:
                raise _Refused(ValidationFailed("A form field is too long", details=[{"field": self._current, "message": f"must be at most {FIELD_MAX_BYTES} bytes"}]))
            return
        piece = data[start:end]
        self._size += len(piece)
        if self._size > self._max_file_size:
            raise _Refused(PayloadTooLarge(f"The file exceeds the {self._max_file_size} byte limit"))
        if self._size > self._bytes_allowed:
            raise _Refused(PayloadTooLarge(self._quota_message, details=[{"field": self._file_field, "message": "would exceed your storage quota"}]))
        if self._mime_type is None:
            self._head += piece
            if len(self._head) >= SNIFF_BYTES:
                self._decide()
            return
        self._store(piece)

    def _part_end(self) -> None:
        if self._current == self._file_field:
            if self._mime_type is None:
                if not self._head:
                    raise _Refused(ValidationFailed("The file is empty", details=[{"field": self._file_field, "message": "must not be empty"}]))
                self._decide()
            self._file_done = True
        elif self._current is not None:
            try:
                self.fields[self._current] = bytes(self._value).decode("utf-8")
            except UnicodeDecodeError:
                raise _Refused(ValidationFailed("A form field is not UTF-8", details=[{"field": self._current, "message": "must be UTF-8 text"}])) from None
        self._current = None

    def _end(self) -> None:
        self._ended = True

    # -- the file's bytes ----------------------------------------------------------

    def _decide(self) -> None:
        head = bytes(self._head)
        self._head = bytearray()
        mime_type = sniff(head)
        if mime_type is None or mime_type not in self._allowed_types:
            raise _Refused(self._unsupported())
        if self._claims_image and mime_type not in IMAGE_TYPES:
            # Allowed content (text, say) named or declared as a picture: an HTML page or a
            # script dressed up to be shown inline somewhere. Refused rather than relabelled.
            raise _Refused(UnsupportedMediaType("The file is named or declared as an image but its content is not one"))
        self._mime_type = mime_type
        if mime_type == TEXT_TYPE:
            self._text = TextCheck()
        self._store(head)

    def _store(self, piece: bytes) -> None:
        if self._text is not None:
            try:
                self._text.feed(piece)
            except ValueError:
                raise _Refused(self._unsupported()) from None
        self._digest.update(piece)
        assert self.pending is not None
        self.pending.write(piece)

    def _unsupported(self) -> UnsupportedMediaType:
        return UnsupportedMediaType(
            "This kind of file is not accepted: JPEG, PNG, GIF, WebP, PDF, plain UTF-8 text, DOC, DOCX, MP3, WAV or OGG")


def form_flag(fields: dict[str, str], name: str) -> bool:
    """A boolean form field (``true``/``false``, ``1``/``0``, ``on``, empty = false)."""
    value = fields.get(name, "").strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("", "false", "0", "no", "off"):
        return False
    raise ValidationFailed("Invalid form field", details=[{"field": name, "message": "must be true or false"}])

