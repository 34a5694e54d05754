"""updateApiKey with any input: either the key is changed exactly as asked, or nothing changed;
never a 500 or an INTERNAL error, and verification keeps answering for the key."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from app.config import Settings
from app.runtime import Runtime
from tests.fuzzing import fuzz_settings, hostile_text, json_values
from tests.support import IssuedKey, Tenant, gql, make_key, snapshot

UPDATE = """
mutation Update($input: UpdateApiKeyInput!) {
  updateApiKey(input: $input) {
    apiKey { id enabled meta ipAllowlist credits { remaining refill { amount interval } } }
    userErrors { code field message }
  }
}
"""

_ints = st.one_of(
    st.integers(min_value=-5, max_value=2_000),
    st.sampled_from([0, -1, 2**31 - 1, -(2**31), 1_000_000_000, 1_000_000_001]),
)
_networks = st.one_of(
    st.sampled_from(
        ["10.0.0.0/8", "203.0.113.7", "2001:db8::/32", "::1", "10.0.0.0/33", "10.0.0.1/24"]
    ),
    hostile_text,
)
_credits = st.fixed_dictionaries(
    {"remaining": _ints},
    optional={
        "refill": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {"amount": _ints, "interval": st.sampled_from(["DAILY", "MONTHLY"])}
            ),
        )
    },
)
_inputs = st.fixed_dictionaries(
    {},
    optional={
        "meta": st.one_of(
            st.none(),
            json_values,
            st.dictionaries(st.text(max_size=8), json_values, max_size=5),
            # Numbers JSON cannot carry, or a reader cannot hold exactly.
            st.sampled_from(
                [{"n": float("inf")}, {"n": [2**64]}, {"n": -(2**63) - 1}, {"n": 1e308}]
            ),
        ),
        "ipAllowlist": st.one_of(st.none(), st.lists(_networks, max_size=5)),
        "credits": st.one_of(st.none(), _credits),
        "enabled": st.one_of(st.none(), st.booleans()),
    },
)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return fuzz_settings(database_url)


@pytest.fixture
async def key(runtime: Runtime, tenant: Tenant) -> IssuedKey:
    return await make_key(runtime, tenant, "fuzzed")


def _assert_changed_as_asked(api_key: dict[str, Any], asked: dict[str, Any]) -> None:
    if "meta" in asked:
        assert api_key["meta"] == asked["meta"]
    if "enabled" in asked:
        assert api_key["enabled"] is asked["enabled"]
    if "credits" in asked:
        credits = asked["credits"]
        shown = api_key["credits"]
        if credits is None:
            assert shown is None
        else:
            assert shown["remaining"] == credits["remaining"]
            assert shown["refill"] == credits.get("refill")


@given(asked=_inputs)
async def test_update_api_key_changes_the_key_as_asked_or_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    key: IssuedKey,
    asked: dict[str, Any],
) -> None:
    before = await snapshot(runtime)

    result = await gql(client, UPDATE, {"input": {"id": key.id, **asked}}, key=tenant.admin_key)

    assert result.response.status_code in {200, 400, 413}, result.response.text[:500]
    assert "INTERNAL" not in result.error_codes, result.errors
    payload = (result.data or {}).get("updateApiKey")
    if payload is not None and payload["apiKey"] is not None:
        event("changed")
        assert payload["userErrors"] == []
        _assert_changed_as_asked(payload["apiKey"], asked)
    else:
        user_errors = [] if payload is None else payload["userErrors"]
        event(f"refused: {result.error_codes or [error['field'] for error in user_errors]}")
        assert result.errors or user_errors
        assert await snapshot(runtime) == before
    answer = await client.post("/v1/keys/verify", json={"key": key.secret, "cost": 0})
    assert answer.status_code == 200, answer.text
