"""Where a request carries its key, and the mistakes people make when they put it there.

Users of public APIs guess, in forum threads, why their key was rejected:
``?key=$openchargemapkey``, a quoted key, a JWT, a key pasted into the URL path. Each of those
gets its own reason and hint here, decided from the request alone, without a database query.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

from app.auth.outcomes import Outcome, Rejection
from app.auth.secret import FormatProblem, format_problem, secret_length

HOW_TO_SEND = (
    "Send the key in the X-API-Key header, as 'Authorization: Bearer <key>', or as the 'key' "
    "query parameter."
)
QUERY_SYNTAX = (
    "In a URL the query string starts with '?' and further parameters are joined with '&', "
    "e.g. /path?key=<key>&output=json."
)

BODY_EXAMPLE = '{"key": "<key>", "scopes": ["<scope>"]}'
_QUOTES = "'\"`‘’“”"
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_PLACEHOLDER_WORDS = re.compile(
    r"(your|my|insert|enter|put|replace)?[\W_]*(api|access)?[\W_]*(key|token|secret)[\W_]*"
    r"(here|goes[\W_]*here)?|x{3,}|\.{3,}|changeme|placeholder|null|none|undefined|example",
    re.IGNORECASE,
)


class Presentation(NamedTuple):
    """The key material one request carried, each value with the place it came from."""

    values: tuple[tuple[str, str], ...]
    # The request's URL path, to explain a key that was put in the path instead of the query.
    url_path: str | None = None
    # Something was sent that looks like an attempt at credentials but carries no key.
    note: str | None = None
    # The key was asked for in a JSON body (the verify endpoint), not in headers or the URL:
    # hints then speak of the body's field.
    in_body: bool = False

    @classmethod
    def of(cls, value: str | None, place: str = "body") -> Presentation:
        values = () if value is None else ((place, value),)
        return cls(values=values, in_body=place == "body")


def from_request(
    raw_headers: Iterable[tuple[bytes, bytes]], query_string: str, url_path: str | None = None
) -> Presentation:
    """Key material from the ``X-API-Key`` and ``Authorization`` headers and ``key=`` params.

    Reads the raw ASGI headers, not a name-to-value mapping: of a repeated header a mapping
    keeps one value, and two different keys in two ``X-API-Key`` headers must be CONFLICTING,
    not whichever comes first."""
    values: list[tuple[str, str]] = []
    note = None
    for header, raw in raw_headers:  # ASGI header names are lower case
        if header == b"x-api-key":
            values.append(("X-API-Key header", raw.decode("latin-1")))
        elif header == b"authorization":
            scheme, _, credentials = raw.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer":
                values.append(("Authorization header", credentials))
            elif scheme:
                note = (
                    f"The Authorization header uses the '{scheme[:20]}' scheme; keyhouse expects "
                    "'Authorization: Bearer <key>'."
                )
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name == "key":
            values.append(("key query parameter", value))
    return Presentation(values=tuple(values), url_path=url_path, note=note)


def from_forward_auth(
    raw_headers: Iterable[tuple[bytes, bytes]], headers: Mapping[str, str]
) -> Presentation:
    """Key material of the request a gateway is asking about (nginx or Traefik forward-auth):
    the key headers, and the ``key=`` of the original URI (from ``headers``, by name)."""
    original_uri = headers.get("x-original-uri") or headers.get("x-forwarded-uri") or ""
    parts = urlsplit(original_uri)
    return from_request(raw_headers, parts.query, url_path=parts.path or None)


def choose_key(presentation: Presentation, prefix: str) -> str | Rejection:
    """The one well-formed key the request presented, or why there is none."""
    values = presentation.values
    if len(values) == 1 and (value := values[0][1].strip()):
        # The common case, kept short: it runs on every verification.
        problem = format_problem(value, prefix)
        if problem is None:
            return value
        return _explain_malformed(value, problem, prefix, _place(presentation, values[0][0]))
    distinct: dict[str, str] = {}
    for place, raw in presentation.values:
        value = raw.strip()  # a trailing newline from a copy-paste is not the user's intent
        if value:
            distinct.setdefault(value, place)
    if not distinct:
        return _missing(presentation)
    if len(distinct) > 1:
        # A header repeated with different keys is named with its count.
        counted = Counter(distinct.values())
        places = ", ".join(
            place if count == 1 else f"{count} × {place}"
            for place, count in sorted(counted.items())
        )
        return Rejection(
            Outcome.CONFLICTING,
            f"The request presents {len(distinct)} different keys ({places}).",
            "Send exactly one key; remove the others from headers and query.",
        )
    (value,) = distinct
    problem = format_problem(value, prefix)
    if problem is None:
        return value
    return _explain_malformed(value, problem, prefix, _place(presentation, distinct[value]))


def _place(presentation: Presentation, place: str) -> str:
    return 'the body\'s "key" field' if presentation.in_body else f"the {place}"


def _missing(presentation: Presentation) -> Rejection:
    if presentation.in_body:
        return Rejection(
            Outcome.MISSING,
            "No API key was found in the request.",
            f'Send the key to check in the body\'s "key" field: {BODY_EXAMPLE}.',
        )
    hint = HOW_TO_SEND
    if presentation.note:
        hint = f"{presentation.note} {hint}"
    path = presentation.url_path or ""
    if "=" in path or "/key/" in path.lower() or "&" in path:
        hint = f"The URL path looks like it holds query parameters. {QUERY_SYNTAX} {hint}"
    elif presentation.url_path is not None:
        hint = f"{hint} {QUERY_SYNTAX}"
    return Rejection(Outcome.MISSING, "No API key was found in the request.", hint)


def _explain_malformed(value: str, problem: FormatProblem, prefix: str, place: str) -> Rejection:
    if len(value) >= 2 and value[0] in _QUOTES and value[-1] in _QUOTES:
        return Rejection(
            Outcome.QUOTED,
            "The API key is wrapped in quotes.",
            "Send the key itself, without quotes around it.",
        )
    if _JWT.fullmatch(value):
        return Rejection(
            Outcome.LOOKS_LIKE_JWT,
            "The value looks like a JWT, not a keyhouse API key.",
            f"API keys start with '{prefix}_'; use the key shown once when it was created, "
            "not a login or session token.",
        )
    if value[0] in "${<%[" or "{" in value or _PLACEHOLDER_WORDS.fullmatch(value):
        return Rejection(
            Outcome.PLACEHOLDER,
            "The value looks like a placeholder or a variable name, not an API key.",
            "Replace it with your actual key; check that the variable holding the key was "
            "expanded before the request was sent.",
        )
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        return Rejection(
            Outcome.MALFORMED,
            f"The API key is malformed: it starts with '{scheme[:20]}', which is not part of "
            "the key.",
            f"Send the key alone in {place}; 'Bearer <key>' is the form of the Authorization "
            "header only.",
        )
    if problem is FormatProblem.PREFIX and value.startswith((f"{prefix}o_", f"{prefix}d_")):
        return Rejection(
            Outcome.MALFORMED,
            f"The API key is malformed: it does not start with '{prefix}_'.",
            f"This is an operator key ({prefix}o_…) or a dashboard sign-in ({prefix}d_…): "
            "they work on /graphql only. Services and gateways check organizations' keys.",
        )
    if problem is FormatProblem.PREFIX:
        detail = f"it does not start with '{prefix}_'"
    elif problem is FormatProblem.LENGTH:
        detail = f"it has {len(value)} characters, keys have {secret_length(prefix)}"
    elif problem is FormatProblem.CHARACTERS:
        detail = "it contains characters that never appear in a key"
    else:
        detail = "its checksum does not match (a typo or a truncated copy)"
    hint = "Copy the key again from where you stored it, exactly as it was shown."
    if any(ch in value for ch in "?&=/"):
        hint = f"The key contains URL characters. {QUERY_SYNTAX}"
    return Rejection(Outcome.MALFORMED, f"The API key is malformed: {detail}.", hint)
