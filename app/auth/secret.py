"""The key format: ``<prefix>_<32 base62 random><6 base62 CRC32>``.

Like GitHub's tokens, the checksum lets us reject a mistyped or truncated key (and most random
junk) without touching the database, and the prefix makes keys recognisable to secret scanners.
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from enum import StrEnum

from app.kit.ids import BASE62, random_base62

RANDOM_LENGTH = 32  # 32 base62 characters: about 190 bits
CHECKSUM_LENGTH = 6  # 62**6 > 2**32


class FormatProblem(StrEnum):
    PREFIX = "prefix"
    LENGTH = "length"
    CHARACTERS = "characters"
    CHECKSUM = "checksum"


# Base62 digit pairs: the checksum is encoded with three divisions instead of six, because
# every verification computes it.
_PAIRS = [a + b for a in BASE62 for b in BASE62]


def _checksum(body: str) -> str:
    high, low = divmod(zlib.crc32(body.encode()), 3844)
    high, middle = divmod(high, 3844)
    return _PAIRS[high] + _PAIRS[middle] + _PAIRS[low]


def generate_secret(prefix: str) -> str:
    body = f"{prefix}_{random_base62(RANDOM_LENGTH)}"
    return body + _checksum(body)


def operator_prefix(key_prefix: str) -> str:
    """Operator keys: ``kho_…`` beside organizations' ``kh_…``, so that secret scanners (and
    keyhouse itself) tell them apart; the same length and checksum."""
    return f"{key_prefix}o"


def dashboard_prefix(key_prefix: str) -> str:
    """The short-lived credential a dashboard sign-in link yields: ``khd_…``."""
    return f"{key_prefix}d"


def link_prefix(key_prefix: str) -> str:
    """A dashboard sign-in link's token: ``khl_…``."""
    return f"{key_prefix}l"


def secret_length(prefix: str) -> int:
    return len(prefix) + 1 + RANDOM_LENGTH + CHECKSUM_LENGTH


@functools.cache
def _shape(prefix: str) -> tuple[str, int]:
    return prefix + "_", secret_length(prefix)


def secret_pattern(prefix: str) -> str:
    """The regular expression that finds exactly our keys in text, for secret scanners: the
    prefix, the underscore, 32 random and 6 checksum characters, not part of a longer word. (A
    regular expression cannot check the CRC32; the leak report endpoint does, and answers
    false_positive for a string whose checksum fails.)"""
    body = RANDOM_LENGTH + CHECKSUM_LENGTH
    return rf"(?<![0-9A-Za-z_]){prefix}_[0-9A-Za-z]{{{body}}}(?![0-9A-Za-z_])"


def format_problem(candidate: str, prefix: str) -> FormatProblem | None:
    """What is wrong with the shape of ``candidate``, or None if it could be one of our keys."""
    head, length = _shape(prefix)
    if not candidate.startswith(head):
        return FormatProblem.PREFIX
    if len(candidate) != length:
        return FormatProblem.LENGTH
    tail = candidate[len(head) :]
    # ASCII letters and digits are exactly the base62 alphabet (two C-level checks).
    if not (tail.isascii() and tail.isalnum()):
        return FormatProblem.CHARACTERS
    body, checksum = candidate[:-CHECKSUM_LENGTH], candidate[-CHECKSUM_LENGTH:]
    if _checksum(body) != checksum:
        return FormatProblem.CHECKSUM
    return None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def hint_for(secret: str, prefix: str) -> str:
    """What a person sees to recognise a key: ``kh_3fA9…x7Qk`` (7 of 38 characters)."""
    start = len(prefix) + 1
    return f"{secret[: start + 4]}…{secret[-4:]}"
