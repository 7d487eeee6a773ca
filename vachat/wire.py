"""JSON on the wire: how the server encodes what it sends and parses what clients send.

Used by REST handlers and the WebSocket alike, so a body and a frame are held to the same
rules: ``parse_json`` refuses, as ``ValidationFailed``, what JSON or our databases cannot hold
(malformed text, nesting deeper than ``MAX_JSON_DEPTH``, NaN and Infinity, NUL, lone
surrogates); ``json_dumpb`` (bytes, through orjson) and ``json_dumps`` (text) write compact
UTF-8 with datetimes as ISO 8601 UTC, milliseconds and ``Z``.

This module must never import the web layer: the hub and the socket use it without it.
"""

from __future__ import annotations

import datetime
import json
import re
import uuid
from typing import Any

import orjson

from .errors import ValidationFailed

__all__ = ["json_dumpb", "json_dumps", "parse_json", "MAX_JSON_DEPTH", "JSON_BLOB_MAX_BYTES", "check_json_size"]


# Text no database column can hold: NUL (PostgreSQL refuses it) and lone UTF-16 surrogates
# (JSON's "\ud800" escapes; not encodable as UTF-8). Refused at the door, not as a 500 later.
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


# What such text looks like in a body (escaped, raw surrogate bytes, or a UTF-16/32 body): only
# then is the parsed body searched for it, so ordinary bodies cost nothing.
_MAYBE_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\x00|\xed[\xa0-\xbf]")


_MAYBE_UNSTORABLE_TEXT = re.compile("\\\\u(?:0000|[dD][89a-fA-F])|[\x00\ud800-\udfff]")


# Deepest JSON nesting accepted, in a body or a frame. Real payloads (forms, preferences, chat
# frames) nest a handful of levels; deep ones only spend stack in every recursive consumer
# (json.dumps, jsonschema, database drivers): 974 levels of profile preferences parsed fine and
# then failed as a RecursionError on the way out.
MAX_JSON_DEPTH = 32


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, (datetime.date, uuid.UUID)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Datetimes go through ``_json_default`` (orjson's own form keeps microseconds and no ``Z``).
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME


def json_dumpb(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON: what every response body and frame is made of.

    orjson encodes the app's answers several times faster than the standard library (a page
    of conversations spent 15 % of its request in ``json.dumps``). What orjson refuses but the
    standard library takes (integers past 64 bits, non-string keys, lone surrogates) goes
    through the standard library, so the two never differ in what they accept; a value
    neither can encode raises ``TypeError``. A lone surrogate (a client's ``"\\ud800"``)
    cannot be UTF-8: such text is written with JSON's ``\\u`` escapes."""
    try:
        return orjson.dumps(value, default=_json_default, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        text = _stdlib_dumps(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _stdlib_dumps(value, ensure_ascii=True).encode("ascii")


def json_dumps(value: Any) -> str:
    """``json_dumpb`` as text."""
    return json_dumpb(value).decode("utf-8")


# Most bytes a client's free-form JSON object (profile preferences, a message's or a
# conversation's metadata) may take encoded: room for any client's settings and annotations,
# not for using the record as free storage (a page of 60 messages is then at most ~1 MiB of it).
JSON_BLOB_MAX_BYTES = 16 * 1024


def check_json_size(value: Any, field: str, max_bytes: int = JSON_BLOB_MAX_BYTES) -> None:
    """Refuse ``value`` (``ValidationFailed`` naming ``field``) when its compact JSON encoding
    takes more than ``max_bytes`` bytes."""
    if len(json_dumpb(value)) > max_bytes:
        raise ValidationFailed(f"{field} is too large", details=[
            {"field": field, "message": f"must take at most {max_bytes} bytes as JSON"}])


def _stdlib_dumps(value: Any, ensure_ascii: bool = False) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"), ensure_ascii=ensure_ascii)


def parse_json(raw: bytes | str, *, where: str = "(body)") -> Any:
    """Parse a request body or a WebSocket frame, refusing with ``ValidationFailed`` what JSON
    or our databases cannot hold: malformed text, nesting deeper than ``MAX_JSON_DEPTH``, NaN
    and Infinity, NUL characters and lone surrogates. The one parser for client JSON."""
    too_deep = ValidationFailed("JSON nested too deeply", details=[
        {"field": where, "message": f"must not nest objects and arrays more than {MAX_JSON_DEPTH} levels deep"}])
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise too_deep from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ValidationFailed("Malformed JSON", details=[{"field": where, "message": str(error)[:200]}]) from None
    if _may_nest_deeper(raw) and _nesting_exceeds(data, MAX_JSON_DEPTH):
        raise too_deep
    suspicious = (_MAYBE_UNSTORABLE if isinstance(raw, bytes) else _MAYBE_UNSTORABLE_TEXT).search(raw)
    bad = _unstorable_text_at(data) if suspicious else None
    if bad is not None:
        raise ValidationFailed("Invalid characters", details=[
            {"field": bad or where, "message": "must not contain NUL characters or unpaired surrogates"}])
    return data


def _may_nest_deeper(raw: bytes | str) -> bool:
    """Whether ``raw`` holds enough opening brackets to nest past ``MAX_JSON_DEPTH`` (counted
    in C, so ordinary bodies skip the walk)."""
    if isinstance(raw, bytes):
        return raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH
    return raw.count("[") + raw.count("{") > MAX_JSON_DEPTH


def _nesting_exceeds(data: Any, limit: int) -> bool:
    """Whether objects and arrays in ``data`` nest more than ``limit`` deep (the outermost is
    level 1). Iterative: depth costs no stack."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        kind = type(value)
        if kind is dict:
            children: Any = value.values()
        elif kind is list:
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if type(child) in (dict, list))
    return False


def _unstorable_text_at(data: Any) -> str | None:
    """The dotted path of the first key or string in ``data`` holding NUL or a lone surrogate
    (``""`` for the top level), else None. Iterative: nesting depth costs no stack."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _UNSTORABLE_TEXT.search(value):
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if _UNSTORABLE_TEXT.search(key):
                    return path
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{index}" if path else str(index), item) for index, item in enumerate(value))
    return None


def _refuse_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and NaN slips past every
    # minimum/maximum and then makes our own answers invalid JSON.
    raise ValueError(f"{name} is not valid JSON")
