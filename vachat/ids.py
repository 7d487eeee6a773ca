"""Opaque, time-ordered identifiers (ULID layout: 48-bit milliseconds + 80 random bits).

Sorting ids sorts by creation time, which is what cursor pagination relies on; within one
millisecond the random part is incremented, so ids made by one process stay strictly ordered.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_id", "id_timestamp", "is_valid_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
_DECODE = {char: index for index, char in enumerate(_ALPHABET)}
ID_LENGTH = 26
# The 26 digits two at a time (10 bits), most significant first: half the steps of one by one.
_DIGIT_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]
_PAIR_SHIFTS = tuple(range(5 * (ID_LENGTH - 2), -1, -10))

_lock = threading.Lock()
_last_millis = 0
_last_random = 0


def new_id() -> str:
    global _last_millis, _last_random
    with _lock:
        millis = time.time_ns() // 1_000_000
        if millis <= _last_millis:
            millis = _last_millis
            _last_random = (_last_random + 1) & ((1 << 80) - 1)
        else:
            _last_millis = millis
            _last_random = int.from_bytes(os.urandom(10), "big")
        value = (millis << 80) | _last_random
    return "".join([_DIGIT_PAIRS[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


def is_valid_id(text: object) -> bool:
    return (
        isinstance(text, str)
        and len(text) == ID_LENGTH
        and all(char in _DECODE for char in text)
        and text[0] in "01234567"  # 26 chars hold 130 bits; only 128 are used
    )


def id_timestamp(identifier: str) -> float:
    """Seconds since the epoch at which the id was made."""
    value = 0
    for char in identifier[:10]:
        value = value * 32 + _DECODE[char]
    return value / 1000
