"""createApiKey with any input: either the key is created exactly as asked, or nothing changed;
never a 500 or an INTERNAL error."""

from __future__ import annotations

import itertools
import string
from typing import Any

import httpx
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from app.config import DEFAULT_PRODUCT_SCOPES, Settings
from app.keys.scopes import READ_ANALYTICS, READ_API_KEYS, WRITE_API_KEYS
from app.runtime import Runtime
from tests.fuzzing import assert_messages_bounded, fuzz_settings, hostile_text
from tests.support import Tenant, gql, snapshot

CREATE = """
mutation Create($input: CreateApiKeyInput!) {
  createApiKey(input: $input) {
    apiKey { id name scopes expiresInDays rateLimit { requests perSeconds isDefault } }
    secret
    userErrors { code field message }
  }
}
"""

KNOWN_SCOPES = [*DEFAULT_PRODUCT_SCOPES, READ_API_KEYS, WRITE_API_KEYS, READ_ANALYTICS]

# Names a person would type, with the whitespace a copy-paste brings around them.
_typed_names = st.builds(
    lambda before, name, after: before + name + after,
    st.sampled_from(["", " ", "\t", "\n", "  \u3000"]),
    st.text(alphabet=string.ascii_letters + string.digits + " -_.:/éßａ", min_size=1, max_size=130),
    st.sampled_from(["", " ", "\r\n", "\u00a0"]),
)
# GraphQL's Int is 32 bits: larger values must be refused as such, not overflow somewhere.
_ints = st.one_of(
    st.integers(min_value=-5, max_value=4_000),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from([0, -1, 2**31 - 1, -(2**31), 2**31, 2**63, 1_000_000, 1_000_001, 86_400]),
)
# What a person would send, so that keys do get created...
_plausible_inputs = st.fixed_dictionaries(
    {"name": _typed_names, "scopes": st.lists(st.sampled_from(KNOWN_SCOPES), min_size=1)},
    optional={
        "expiresInDays": st.one_of(st.none(), st.integers(min_value=1, max_value=3_650)),
        "rateLimit": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {
                    "requests": st.integers(min_value=1, max_value=1_000_000),
                    "perSeconds": st.integers(min_value=1, max_value=86_400),
                }
            ),
        ),
    },
)
# ...and anything at all.
_any_inputs = st.fixed_dictionaries(
    {
        "name": st.one_of(_typed_names, hostile_text),
        "scopes": st.lists(st.one_of(st.sampled_from(KNOWN_SCOPES), hostile_text), max_size=25),
    },
    optional={
        "expiresInDays": st.one_of(st.none(), _ints),
        "rateLimit": st.one_of(
            st.none(), st.fixed_dictionaries({"requests": _ints, "perSeconds": _ints})
        ),
    },
)
_inputs = st.one_of(_plausible_inputs, _any_inputs)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return fuzz_settings(database_url)


def _assert_created_as_asked(key: dict[str, Any], asked: dict[str, Any]) -> None:
    assert key["name"] == asked["name"].strip()
    assert sorted(key["scopes"]) == sorted(set(asked["scopes"]))
    days = asked.get("expiresInDays")
    assert key["expiresInDays"] == days
    limit = asked.get("rateLimit")
    if limit is None:
        assert key["rateLimit"]["isDefault"] is True
    else:
        assert key["rateLimit"] == {**limit, "isDefault": False}


_unique = (f" {n}" for n in itertools.count())


@given(asked=_inputs, rename=st.sampled_from([True, True, True, False]))
async def test_create_api_key_creates_the_key_as_asked_or_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    asked: dict[str, Any],
    rename: bool,
) -> None:
    if rename and asked["name"].strip():
        # Most typed names are new; a few repeat (NAME_TAKEN), as they would in real use.
        trimmed = asked["name"].rstrip()
        asked = {**asked, "name": trimmed + next(_unique) + asked["name"][len(trimmed) :]}
    before = await snapshot(runtime)

    result = await gql(client, CREATE, {"input": asked}, key=tenant.admin_key)

    assert result.response.status_code in {200, 400, 413}, result.response.text[:500]
    assert "INTERNAL" not in result.error_codes, result.errors
    assert_messages_bounded(result.response, [asked["name"], *asked["scopes"]])
    payload = (result.data or {}).get("createApiKey")
    if payload is not None and payload["apiKey"] is not None:
        event("created")
        assert result.errors == []
        assert payload["userErrors"] == []
        assert payload["secret"]
        _assert_created_as_asked(payload["apiKey"], asked)
        after = await snapshot(runtime)
        assert len(after["api_keys"]) == len(before["api_keys"]) + 1
    else:
        user_errors = [] if payload is None else payload["userErrors"]
        event(f"refused: {result.error_codes or [error['code'] for error in user_errors]}")
        assert result.errors or user_errors
        assert await snapshot(runtime) == before
