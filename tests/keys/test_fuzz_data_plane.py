"""The data plane with any body or header: never a 500, and nothing a request sends can stop
usage metering (every flush succeeds, stores clean labels, and another organization's counts
stay exact)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from app.config import DEFAULT_PRODUCT_SCOPES, Settings
from app.keys.router import MAX_OPERATION_LENGTH
from app.runtime import Runtime
from tests.fuzzing import (
    assert_metering_unharmed,
    fuzz_settings,
    header_text,
    hostile_characters,
    hostile_text,
    json_values,
)
from tests.support import IssuedKey, Tenant, make_key

VERIFY = "/v1/keys/verify"
FORWARD_AUTH = "/v1/auth"
# Stands for the key under test in a drawn request; replaced by its secret when sent.
THE_KEY = "<the key under test>"
KNOWN_SCOPES = list(DEFAULT_PRODUCT_SCOPES)


@pytest.fixture
def settings(database_url: str) -> Settings:
    # The test client's address is a trusted proxy: its X-Forwarded-For and X-Real-IP are read.
    return fuzz_settings(database_url).model_copy(update={"trusted_proxies": "127.0.0.1"})


@pytest.fixture
async def key(runtime: Runtime, tenant: Tenant) -> IssuedKey:
    return await make_key(runtime, tenant, "fuzzed service", ["read:charge_points"])


@pytest.fixture
async def bystander_key(runtime: Runtime, other_tenant: Tenant) -> IssuedKey:
    """A key of another organization, used between hostile requests: its uses must all count."""
    return await make_key(runtime, other_tenant, "bystander", ["read:charge_points"])


def _with_key(value: Any, secret: str) -> Any:
    if value == THE_KEY:
        return secret
    if isinstance(value, dict):
        return {name: _with_key(item, secret) for name, item in value.items()}
    if isinstance(value, list):
        return [_with_key(item, secret) for item in value]
    return value


_scope_lists = st.lists(st.one_of(st.sampled_from(KNOWN_SCOPES), hostile_text), max_size=22)
_verify_objects = st.builds(
    lambda extra, fields: {**extra, **fields},
    st.one_of(st.just({}), st.dictionaries(st.text(max_size=10), json_values, max_size=3)),
    st.fixed_dictionaries(
        {},
        optional={
            "key": st.one_of(st.just(THE_KEY), st.just(THE_KEY), hostile_text, json_values),
            "scopes": st.one_of(_scope_lists, _scope_lists, json_values),
            "operation": st.one_of(hostile_text, hostile_text, json_values),
            "ip": st.one_of(
                st.sampled_from(["203.0.113.7", "::1", "[2001:db8::1]:443", "10.0.0.0/8"]),
                hostile_text,
                json_values,
            ),
            "cost": st.one_of(st.integers(min_value=-5, max_value=1_005), json_values),
        },
    ),
)


# A valid request whose operation label is hostile: it is answered VALID and counted, the
# path that once stopped every flush.
_metered_objects = st.fixed_dictionaries(
    {
        "key": st.just(THE_KEY),
        "operation": st.text(alphabet=hostile_characters, max_size=MAX_OPERATION_LENGTH),
    },
    optional={"scopes": st.lists(st.sampled_from(KNOWN_SCOPES), max_size=3)},
)


def _nested(depth: int) -> bytes:
    return b'{"key": ' + b"[" * depth + b"]" * depth + b"}"


# Bodies as bytes: JSON with every non-ASCII character escaped (lone surrogates too), JSON as
# UTF-8 (a lone surrogate then makes it invalid UTF-8), deep nesting, and arbitrary bytes.
_verify_bodies = st.one_of(
    st.builds(lambda body: json.dumps(body).encode(), _metered_objects),
    st.builds(lambda body: json.dumps(body).encode(), _metered_objects),
    st.builds(lambda body: json.dumps(body).encode(), _verify_objects),
    st.builds(lambda body: json.dumps(body).encode(), _verify_objects),
    st.builds(
        lambda body: json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass"),
        _verify_objects,
    ),
    st.builds(lambda body: json.dumps(body).encode(), json_values),
    st.builds(_nested, st.integers(min_value=1, max_value=20_000)),
    st.binary(max_size=300),
    st.builds(
        lambda unit, times: unit * times, st.binary(min_size=1, max_size=4), st.integers(1, 9_000)
    ),
)


@given(body=_verify_bodies)
async def test_verify_answers_any_body_without_a_500_and_metering_goes_on(
    client: httpx.AsyncClient,
    runtime: Runtime,
    key: IssuedKey,
    bystander_key: IssuedKey,
    other_tenant: Tenant,
    body: bytes,
) -> None:
    sent = body.replace(THE_KEY.encode(), key.secret.encode())

    response = await client.post(VERIFY, content=sent, headers={"Content-Type": "application/json"})

    event(f"HTTP {response.status_code}")
    # 200 for any key (valid or not), 400 for a body that is not JSON, 413 past 16 KiB, 422 for
    # a body of the wrong shape. No service token is configured, so never 401.
    assert response.status_code in {200, 400, 413, 422}, response.text[:500]
    answer = response.json()
    assert isinstance(answer, dict)
    assert len(response.content) < 2_000
    await assert_metering_unharmed(client, runtime, bystander_key, other_tenant.organization_id)


_header_names = st.sampled_from(
    [
        "X-Original-URI",
        "X-Original-Method",
        "X-Forwarded-Uri",
        "X-Forwarded-Method",
        "X-Keyhouse-Operation",
        "X-Required-Scopes",
        "X-Forwarded-For",
        "X-Real-IP",
    ]
)
_gateway_headers = st.dictionaries(_header_names, header_text, max_size=6)
# Where the request carries the key: a header, a bearer token, the original URI's query, or
# nowhere.
_key_places = st.sampled_from(["X-API-Key", "Authorization", "query", "nowhere"])


@given(headers=_gateway_headers, key_place=_key_places)
async def test_forward_auth_answers_any_gateway_headers_without_a_500_and_metering_goes_on(
    client: httpx.AsyncClient,
    runtime: Runtime,
    key: IssuedKey,
    bystander_key: IssuedKey,
    other_tenant: Tenant,
    headers: dict[str, str],
    key_place: str,
) -> None:
    sent = dict(headers)
    if key_place == "X-API-Key":
        sent["X-API-Key"] = key.secret
    elif key_place == "Authorization":
        sent["Authorization"] = f"Bearer {key.secret}"
    elif key_place == "query":
        uri = sent.get("X-Original-URI", "/")
        sent["X-Original-URI"] = f"{uri}{'&' if '?' in uri else '?'}key={key.secret}"

    response = await client.get(
        FORWARD_AUTH,
        headers=[(name.encode(), value.encode("latin-1")) for name, value in sent.items()],
    )

    event(f"HTTP {response.status_code}")
    # 200 allowed; 400 for a required scope no key can hold; 401, 403 (429 with
    # ratelimit_status=403) for a key refused.
    assert response.status_code in {200, 400, 401, 403, 429}, response.text[:500]
    if response.status_code != 200:
        assert "code" in response.json() or "error" in response.json()
    await assert_metering_unharmed(client, runtime, bystander_key, other_tenant.organization_id)
