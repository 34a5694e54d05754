"""Opaque identifiers: a type prefix and 128 random bits in base62 (``key_4Jd…``)."""

from __future__ import annotations

import re
import secrets

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_BODY_LENGTH = 22  # 62**22 > 2**128


def base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def new_id(kind: str) -> str:
    return f"{kind}_{base62(secrets.randbits(128), _ID_BODY_LENGTH)}"


def is_id_of(kind: str, value: str) -> bool:
    """Whether ``value`` is shaped like an id of this kind (no database needed to say no)."""
    return re.fullmatch(rf"{kind}_[0-9A-Za-z]{{{_ID_BODY_LENGTH}}}", value) is not None
