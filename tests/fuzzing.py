"""Hostile input for the property-based tests: strings a careless or malicious caller may send,
and what every answer to them must look like.

The settings profile (examples per property) is registered in tests/conftest.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import strategies as st
from sqlalchemy import text

from app.config import Settings
from app.kit.boundary import label
from app.kit.labels import OPERATION_MAX_LENGTH
from app.runtime import Runtime
from tests.support import IssuedKey

# Characters that have broken, or could break, something between the request and the
# database: NUL (PostgreSQL text), lone surrogates (UTF-8, SQLite's driver, orjson), C0 and C1
# controls (terminals, logs), bidirectional overrides (text that reads differently from what
# it is), zero-width and other invisible characters, line and paragraph separators, a byte
# order mark, the replacement character itself, quotes and backslashes (messages, SQL, JSON).
HOSTILE_CHARACTERS = (
    "\x00\x01\x07\x08\t\n\x0b\x0c\r\x1b\x7f"
    "\x80\x85\x9b\x9f"
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    "\u00ad\u200b\u200c\u200d\u2060\ufeff\u2028\u2029"
    "\ud800\udbff\udc00\udfff"
    "\ufffd'\"\\%_"
)
# Long enough that an error message quoting it in full would be noticed, and past every length
# limit keyhouse has (4,096 characters for any GraphQL string).
LONG_ENOUGH_TO_NOTICE = 101
HUGE_LENGTH_MAX = 300_000

hostile_characters: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(HOSTILE_CHARACTERS),
    # Any code point, surrogates and unassigned ones included.
    st.characters(codec=None),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
)


def _repeated(unit: str, length: int) -> str:
    return (unit * (length // len(unit) + 1))[:length]


def huge_text(min_size: int = 4_000, max_size: int = HUGE_LENGTH_MAX) -> st.SearchStrategy[str]:
    """A value of thousands to hundreds of thousands of characters: a short hostile piece,
    repeated (Hypothesis draws short strings; a huge one is built, not drawn)."""
    return st.builds(
        _repeated,
        st.text(alphabet=hostile_characters, min_size=1, max_size=8),
        st.integers(min_value=min_size, max_value=max_size),
    )


hostile_text: st.SearchStrategy[str] = st.one_of(
    st.just(""),
    st.text(alphabet=" \t\r\n\u00a0\u3000", min_size=1, max_size=4),
    st.text(alphabet=hostile_characters, max_size=40),
    st.text(alphabet=hostile_characters, min_size=90, max_size=300),
    huge_text(),
)

# Text HTTP headers can carry: a header is bytes, read as Latin-1. CR and LF would split it, so
# they are left out; every other byte, NUL and the C1 controls included, is in.
header_text: st.SearchStrategy[str] = st.one_of(
    st.text(
        alphabet=st.characters(max_codepoint=0xFF, exclude_characters="\r\n"),
        max_size=60,
    ),
    st.builds(
        _repeated,
        st.text(
            alphabet=st.characters(max_codepoint=0xFF, exclude_characters="\r\n"),
            min_size=1,
            max_size=4,
        ),
        st.integers(min_value=100, max_value=8_000),
    ),
    # What a gateway forwards for a client that sent UTF-8: its bytes, read as Latin-1.
    st.text(alphabet=hostile_characters, max_size=40).map(
        lambda text: (
            text.encode("utf-8", "surrogatepass")
            .decode("latin-1")
            .replace("\r", "")
            .replace("\n", "")
        )
    ),
)
json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    hostile_text,
)


def _json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(
        st.text(alphabet=hostile_characters, max_size=10), inner, max_size=4
    )


json_values: st.SearchStrategy[Any] = st.recursive(json_scalars, _json_containers, max_leaves=12)


def fuzz_settings(database_url: str) -> Settings:
    """A deployment whose rate limits stay out of the way of a few hundred requests from one
    key: these tests are about input, not about budgets. No webhook worker either: it would
    mark the keys' own creation events delivered while a test compares the tables."""
    return Settings(
        database_url=database_url,
        usage_flush_interval_seconds=3600,
        default_rate_limit_requests=1_000_000,
        deliver_webhooks=False,
    )


def as_json(value: Any) -> str:
    """``value`` as JSON text with every non-ASCII character escaped, lone surrogates
    included (UTF-8 cannot carry those)."""
    return json.dumps(value)


MESSAGE_LENGTH_MAX = 1_000


def messages(body: Any) -> list[str]:
    """Every ``message`` in a JSON answer, at any depth (GraphQL errors and userErrors)."""
    found: list[str] = []
    if isinstance(body, dict):
        for name, item in body.items():
            if name == "message" and isinstance(item, str):
                found.append(item)
            else:
                found.extend(messages(item))
    elif isinstance(body, list):
        for item in body:
            found.extend(messages(item))
    return found


def assert_messages_bounded(response: httpx.Response, sent: list[str]) -> None:
    """Every message is short, and none quotes in full a long value the request sent."""
    long_values = [value for value in sent if len(value) >= LONG_ENOUGH_TO_NOTICE]
    for message in messages(response.json()):
        assert len(message) <= MESSAGE_LENGTH_MAX, message[:200]
        for value in long_values:
            assert value not in message, message[:200]


async def _stored_uses(runtime: Runtime, organization_id: str) -> int:
    async with runtime.engine.connect() as connection:
        stored = await connection.execute(
            text(
                "SELECT coalesce(sum(count), 0) FROM usage_buckets"
                " WHERE organization_id = :org AND granularity = 'MINUTE'"
            ),
            {"org": organization_id},
        )
        return int(stored.scalar_one())


async def _stored_labels(runtime: Runtime) -> list[str]:
    async with runtime.engine.connect() as connection:
        rows = await connection.execute(text("SELECT DISTINCT operation FROM usage_buckets"))
        return [row[0] for row in rows]


async def assert_metering_unharmed(
    client: httpx.AsyncClient, runtime: Runtime, bystander: IssuedKey, organization_id: str
) -> None:
    """One use of another organization's key, then a flush: the flush writes everything (sets
    nothing aside), the bystander's use is stored, and every stored label is clean."""
    before = await _stored_uses(runtime, organization_id)
    set_aside = runtime.recorder.refused_buckets
    answer = await client.post(
        "/v1/keys/verify", json={"key": bystander.secret, "operation": "bystander"}
    )
    assert answer.json()["valid"] is True

    await runtime.recorder.flush()

    assert runtime.recorder.pending_buckets == 0
    assert runtime.recorder.refused_buckets == set_aside
    assert await _stored_uses(runtime, organization_id) == before + 1
    for stored in await _stored_labels(runtime):
        assert stored == label(stored, OPERATION_MAX_LENGTH), repr(stored[:100])
