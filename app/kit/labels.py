"""Operation labels: what a use of a key is counted under, and why their number is bounded.

Usage rows grow with the distinct labels of each key, and labels come from traffic: a verify
body names any operation it likes, and forward auth labels a use with the request's method and
path, where every resource has its own identifier. Three things keep the rows bounded:

- a path's identifiers (numbers, UUIDs, long hex, key-shaped tokens) become :data:`IDENTIFIER`,
  so ``GET /poi/123`` and ``GET /poi/124`` are one label, ``GET /poi/{id}`` (and a key pasted
  into a path is never stored);
- a gateway may name the operation itself (``X-Keyhouse-Operation``);
- the recorder counts at most so many distinct labels per key and hour and the rest under
  :data:`OVERFLOW_LABEL` (the usage recorder).

Every label is cleaned by the boundary (:func:`app.kit.boundary.label`) before it is counted.
"""

from __future__ import annotations

import re

from app.kit.boundary import label

# The longest label kept (the usage tables' operation column).
OPERATION_MAX_LENGTH = 200
IDENTIFIER = "{id}"
OVERFLOW_LABEL = "(other)"
# Methods are short words (GET, PROPFIND); a longer one is cut, like any label.
METHOD_MAX_LENGTH = 10
# Paths are cut to this before their identifiers are replaced, which bounds the work on a path
# of any length and still leaves more than a label's length once identifiers are shortened.
PATH_SCAN_LENGTH = 4 * OPERATION_MAX_LENGTH

_SLASH_IDENTIFIER = f"/{IDENTIFIER}"
# A whole path segment that identifies one resource rather than naming a kind of resource,
# matched with the slash before it (the search then skips from slash to slash).
_IDENTIFIER_SEGMENT = re.compile(
    r"/(?:"
    r"\d+"  # a number
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"  # a UUID
    r"|[0-9a-fA-F]{16,}"  # long hex: digests, object ids
    # prefix_ + base62 (an API key, a token, a Stripe-style id): with a digit, or long enough
    # that it is no word (by_organization stays).
    r"|[A-Za-z][A-Za-z0-9]{0,9}_(?:(?=[A-Za-z]*[0-9])[A-Za-z0-9]{12,}|[A-Za-z0-9]{24,})"
    # A long base62 run that mixes letters and digits: a random id, never a word.
    r"|(?=[A-Za-z]*[0-9])(?=[0-9]*[A-Za-z])[A-Za-z0-9]{20,}"
    r")(?=/|$)"
)


def operation_label(operation: str) -> str:
    """A label a caller or a gateway chose, as it will be counted."""
    return label(operation, OPERATION_MAX_LENGTH)


def normalize_path(path: str) -> str:
    """``path`` with each identifier segment replaced by :data:`IDENTIFIER`."""
    return _IDENTIFIER_SEGMENT.sub(_SLASH_IDENTIFIER, path)


def request_label(method: str, path: str) -> str:
    """The label of a request known only by its method and path (forward auth)."""
    normalized = normalize_path(path[:PATH_SCAN_LENGTH])
    return label(f"{method[:METHOD_MAX_LENGTH]} {normalized}", OPERATION_MAX_LENGTH)
