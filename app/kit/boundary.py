"""The boundary: the one check every string that enters keyhouse goes through.

Past this module, code may assume clean text. Three kinds of strings arrive:

- **values** a caller asks us to store or look up (GraphQL arguments, verify bodies): refused
  with a clear error when they hold a NUL, a lone surrogate, another control character or a
  bidirectional-override character, or are too long. The database would refuse the first two
  (PostgreSQL: no NUL in text; SQLite's driver: no surrogates in UTF-8) and the rest hide what a
  value really says from the person who reads it later;
- **names** people read in a list (key names): values, plus no invisible characters at all, and
  compared under NFKC and case folding, so a full-width ``admin`` and ``ADMIN`` are the name
  ``admin``;
- **labels** that come from traffic (an operation name, a request path): never refused, since
  the request they label may be perfectly valid; whatever a value may not hold is replaced with
  U+FFFD and the label is cut to its length.

An error never quotes more than :data:`EXCERPT_LENGTH` characters of what was sent, and quotes
it cleaned (see :func:`excerpt`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Mapping
from typing import Any

EXCERPT_LENGTH = 100
REPLACEMENT = "\ufffd"
# Longest string a GraphQL argument or a verify field may hold, whatever it is. Each field has
# its own, shorter, limit where it has one (a name, a scope); this bounds the rest.
MAX_VALUE_LENGTH = 4096

# Characters that reorder how text is displayed (the "Trojan source" family): a value holding
# one reads differently from what it is.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Whitespace a multi-line value (a description) may hold; a name or label holds none of it.
_LAYOUT = frozenset("\t\n\r")
# Categories a name may not hold: control, format (zero-width, bidi, soft hyphen...),
# surrogates, line and paragraph separators.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _value_fault(char: str) -> str | None:
    """What is wrong with this character in a stored or queried value, if anything."""
    if char in _LAYOUT:
        return None
    if char in _BIDI_CONTROLS:
        return "a bidirectional control character"
    category = unicodedata.category(char)
    if category == "Cs":
        return "a lone surrogate"
    if char == "\x00":
        return "a NUL character"
    if category == "Cc":
        return "a control character"
    return None


def _name_fault(char: str) -> str | None:
    if char in _LAYOUT:
        return "a line break or tab"
    fault = _value_fault(char)
    if fault is not None:
        return fault
    if unicodedata.category(char) in _INVISIBLE_CATEGORIES:
        return "an invisible character"
    return None


def _first_fault(value: str, fault_of: Any) -> tuple[int, str] | None:
    if value.isascii() and value.isprintable():
        return None  # nearly every value: no character needs a closer look
    for position, char in enumerate(value):
        fault = fault_of(char)
        if fault is not None:
            return position, fault
    return None


def excerpt(value: str, length: int = EXCERPT_LENGTH) -> str:
    """At most ``length`` characters of ``value``, for an error message or a log line: what a
    value may not hold replaced with U+FFFD, and an ellipsis when it was cut."""
    cut = value[:length]
    cleaned = label(cut, length)
    return cleaned if len(value) <= length else f"{cleaned}…"


def value_problem(value: str, *, max_length: int = MAX_VALUE_LENGTH) -> str | None:
    """Why ``value`` cannot be stored or looked up, as a sentence; None when it can."""
    if len(value) > max_length:
        return f"is longer than {max_length} characters ({len(value)})"
    found = _first_fault(value, _value_fault)
    if found is None:
        return None
    position, fault = found
    return f"holds {fault} at position {position}"


def name_problem(value: str, *, max_length: int) -> str | None:
    """Why ``value`` (already trimmed) cannot be a name people read; None when it can."""
    if len(value) > max_length:
        return f"can have at most {max_length} characters, got {len(value)}"
    found = _first_fault(value, _name_fault)
    if found is None:
        return None
    position, fault = found
    return f"holds {fault} at position {position}"


def name_key(name: str) -> str:
    """The form two names are compared in: a full-width ``admin``, ``Admin`` and ``admin`` are
    one name. NFKC folds compatibility forms (full-width, ligatures); case folding then NFKC
    again is Unicode's recipe for caseless matching of identifiers."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def label(value: str, max_length: int) -> str:
    """A traffic label (operation name, path): cut to ``max_length`` and cleaned, never
    refused. Characters a value may not hold become U+FFFD."""
    cut = value[:max_length]
    if _first_fault(cut, _name_fault) is None:
        return cut
    return "".join(REPLACEMENT if _name_fault(char) else char for char in cut)


def problems_in(data: object, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a JSON-like value (dicts, lists) that :func:`value_problem` refuses, with
    its path (``input.name``, ``ids.3``). Keys of objects are checked as well."""
    if isinstance(data, str):
        problem = value_problem(data)
        if problem is not None:
            yield path or "value", problem
    elif isinstance(data, Mapping):
        for key, item in data.items():
            inner = f"{path}.{key}" if path else str(key)
            if isinstance(key, str):
                problem = value_problem(key, max_length=EXCERPT_LENGTH)
                if problem is not None:
                    yield f"{path or 'value'} (a field name)", problem
                    continue
            yield from problems_in(item, inner)
    elif isinstance(data, list | tuple):
        for index, item in enumerate(data):
            yield from problems_in(item, f"{path}.{index}" if path else str(index))
