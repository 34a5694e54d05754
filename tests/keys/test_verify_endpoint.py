"""``POST /v1/keys/verify``: HTTP 200 with an explained outcome for any key; 400/422 only for a
malformed request body, which changes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.auth.secret import generate_secret
from app.runtime import Runtime
from tests.support import Tenant, gql, make_key, snapshot

VERIFY = "/v1/keys/verify"

CREATE_KEY = """
mutation Create($input: CreateApiKeyInput!) {
  createApiKey(input: $input) {
    apiKey { id scopes expiresAt rateLimit { requests perSeconds isDefault } }
    secret
    userErrors { code field message }
  }
}
"""

REVOKE_KEY = """
mutation Revoke($id: ID!) {
  revokeApiKey(id: $id) { apiKey { id status } userErrors { code message } }
}
"""

IDENTITY_FIELDS = ("keyId", "organizationId", "scopes", "expiresAt")


async def create_key_via_graphql(
    client: httpx.AsyncClient, tenant: Tenant, **fields: Any
) -> dict[str, Any]:
    """createApiKey as the tenant's admin; returns the payload (apiKey and secret)."""
    result = await gql(client, CREATE_KEY, {"input": fields}, key=tenant.admin_key)
    assert result.response.status_code == 200, result.body
    payload: dict[str, Any] = result.data["createApiKey"]
    assert payload["userErrors"] == [], payload
    return payload


async def verify(
    client: httpx.AsyncClient, key: str, scopes: list[str] | None = None, **extra: Any
) -> httpx.Response:
    body: dict[str, Any] = {"key": key, **extra}
    if scopes is not None:
        body["scopes"] = scopes
    return await client.post(VERIFY, json=body)


def assert_rejected(response: httpx.Response, code: str) -> dict[str, Any]:
    """A refusal: HTTP 200, not valid, the code, a message and hint, no identity fields."""
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["valid"] is False
    assert body["code"] == code
    assert body["message"]
    assert body["hint"]
    for field in IDENTITY_FIELDS:
        assert body[field] is None, (field, body)
    return body


# --- a valid key ------------------------------------------------------------------------------


async def test_valid_key_answers_with_its_identity_scopes_expiry_and_rate_limit(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = await create_key_via_graphql(
        client,
        tenant,
        name="charging app",
        scopes=["read:charge_points", "read:billing"],
        expiresInDays=30,
    )

    response = await verify(client, created["secret"], ["read:charge_points"])

    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is True
    assert body["code"] == "VALID"
    assert body["message"]
    assert body["hint"] is None
    assert body["keyId"] == created["apiKey"]["id"]
    assert body["organizationId"] == tenant.organization_id
    assert body["scopes"] == ["read:billing", "read:charge_points"]
    assert datetime.fromisoformat(body["expiresAt"]) == datetime.fromisoformat(
        created["apiKey"]["expiresAt"]
    )
    ratelimit = body["ratelimit"]
    assert ratelimit["limit"] == 1000
    assert ratelimit["remaining"] == 999
    assert ratelimit["reset"] >= int(time.time())


async def test_valid_key_answer_carries_rate_limit_headers(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "svc")

    response = await verify(client, key.secret)

    assert response.headers["X-RateLimit-Limit"] == "1000"
    assert response.headers["X-RateLimit-Remaining"] == "999"
    assert "Retry-After" not in response.headers
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Content-Length"] == str(len(response.content))


async def test_key_that_never_expires_has_null_expires_at(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "forever")

    body = (await verify(client, key.secret)).json()

    assert body["valid"] is True
    assert body["expiresAt"] is None


async def test_key_with_surrounding_whitespace_is_accepted(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "pasted")

    body = (await verify(client, f"  {key.secret}\n")).json()

    assert body["valid"] is True
    assert body["keyId"] == key.id


# --- rejections: HTTP 200, explained, identity fields null -------------------------------------


async def test_empty_key_is_missing_and_the_hint_speaks_of_the_body(
    client: httpx.AsyncClient,
) -> None:
    body = assert_rejected(await verify(client, ""), "MISSING")

    # This endpoint takes the key in its body: headers and query parameters are another's.
    assert '"key"' in body["hint"]
    assert "header" not in body["hint"]
    assert "query" not in body["hint"]


async def test_a_bearer_prefix_in_the_body_is_named_as_such(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = assert_rejected(await verify(client, f"Bearer {tenant.admin_key}"), "MALFORMED")

    assert "starts with 'Bearer'" in body["message"]
    assert "does not start with" not in body["message"]
    assert 'alone in the body\'s "key" field' in body["hint"]
    assert tenant.admin_key not in json.dumps(body)


async def test_key_with_a_typo_is_malformed(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "typo")
    last = key.secret[-1]
    typo = key.secret[:-1] + ("a" if last != "a" else "b")

    body = assert_rejected(await verify(client, typo), "MALFORMED")

    assert "checksum" in body["message"]


async def test_truncated_key_is_malformed_and_says_how_long_keys_are(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "truncated")

    body = assert_rejected(await verify(client, key.secret[:-3]), "MALFORMED")

    assert f"{len(key.secret) - 3} characters" in body["message"]


async def test_jwt_is_recognised_as_a_jwt(client: httpx.AsyncClient) -> None:
    jwt = (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
        ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    )

    assert_rejected(await verify(client, jwt), "LOOKS_LIKE_JWT")


@pytest.mark.parametrize(
    "placeholder", ["$OPENCHARGEMAP_KEY", "{{api_key}}", "<your-api-key>", "YOUR_API_KEY_HERE"]
)
async def test_placeholder_is_recognised_as_a_placeholder(
    client: httpx.AsyncClient, placeholder: str
) -> None:
    assert_rejected(await verify(client, placeholder), "PLACEHOLDER")


async def test_quoted_key_is_quoted(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "quoted")

    body = assert_rejected(await verify(client, f'"{key.secret}"'), "QUOTED")

    assert "quotes" in body["hint"]


async def test_well_formed_key_that_was_never_issued_is_unknown(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    assert_rejected(await verify(client, generate_secret("kh")), "UNKNOWN")


async def test_revocation_through_graphql_is_seen_by_the_very_next_verification(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "to revoke")
    assert (await verify(client, key.secret)).json()["valid"] is True  # now cached

    revoked = await gql(client, REVOKE_KEY, {"id": key.id}, key=tenant.admin_key)
    assert revoked.data["revokeApiKey"]["apiKey"]["status"] == "REVOKED", revoked.body

    body = assert_rejected(await verify(client, key.secret), "REVOKED")
    assert "revoked" in body["message"]
    assert body["ratelimit"] is None


async def test_expiry_is_checked_against_the_clock_even_for_a_cached_key(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = await make_key(runtime, tenant, "short-lived", expires_in_days=1)
    assert (await verify(client, key.secret)).json()["valid"] is True  # now cached

    in_two_days = time.time() + 2 * 86400
    monkeypatch.setattr("app.keys.verification.time.time", lambda: in_two_days)

    body = assert_rejected(await verify(client, key.secret), "EXPIRED")
    assert "expired" in body["message"]


async def test_missing_scope_is_insufficient_scope_naming_it(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "reader", ["read:charge_points"])

    body = assert_rejected(
        await verify(client, key.secret, ["read:charge_points", "write:billing"]),
        "INSUFFICIENT_SCOPE",
    )

    assert "'write:billing'" in body["message"]
    assert "read:charge_points" not in body["message"]
    assert "not a known scope" not in body["message"]


async def test_unknown_scope_names_are_named_and_marked_as_unknown(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "reader", ["read:charge_points"])

    body = assert_rejected(
        await verify(client, key.secret, ["read:chargepoints", "write:billing"]),
        "INSUFFICIENT_SCOPE",
    )

    assert "'read:chargepoints' (not a known scope)" in body["message"]
    assert "'write:billing'" in body["message"]
    assert "'write:billing' (not a known scope)" not in body["message"]


async def test_key_over_its_rate_limit_is_rate_limited_with_retry_after(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = await create_key_via_graphql(
        client,
        tenant,
        name="limited",
        scopes=["read:charge_points"],
        rateLimit={"requests": 3, "perSeconds": 60},
    )
    assert created["apiKey"]["rateLimit"] == {"requests": 3, "perSeconds": 60, "isDefault": False}

    remaining = [(await verify(client, created["secret"])).json()["ratelimit"]["remaining"]]
    remaining += [(await verify(client, created["secret"])).json()["ratelimit"]["remaining"]]
    remaining += [(await verify(client, created["secret"])).json()["ratelimit"]["remaining"]]
    assert remaining == [2, 1, 0]

    response = await verify(client, created["secret"])

    body = assert_rejected(response, "RATE_LIMITED")
    assert body["ratelimit"]["limit"] == 3
    assert body["ratelimit"]["remaining"] == 0
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    # The hint and the header come from one reading of the clock.
    assert body["hint"] == f"Retry after {response.headers['Retry-After']} seconds."
    assert response.headers["X-RateLimit-Remaining"] == "0"


async def test_rejection_for_an_earlier_reason_spends_no_rate_limit_budget(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = await create_key_via_graphql(
        client,
        tenant,
        name="limited",
        scopes=["read:charge_points"],
        rateLimit={"requests": 3, "perSeconds": 60},
    )
    for _ in range(5):
        assert_rejected(
            await verify(client, created["secret"], ["write:billing"]), "INSUFFICIENT_SCOPE"
        )

    body = (await verify(client, created["secret"])).json()

    assert body["valid"] is True
    assert body["ratelimit"]["remaining"] == 2


# --- malformed request bodies: 400/422 with a clear JSON error, nothing changes ----------------


async def test_body_that_is_not_json_is_400_with_a_clear_error(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "svc")
    before = await snapshot(runtime)

    response = await client.post(
        VERIFY,
        content=f'{{"key": "{key.secret}",',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json() == {
        "code": "BAD_REQUEST",
        "message": "The body is not valid JSON.",
        "hint": None,
    }
    await runtime.recorder.flush()
    assert await snapshot(runtime) == before


@pytest.mark.parametrize(
    ("body", "names"),
    [
        pytest.param({"key": 1}, "key", id="key-not-a-string"),
        pytest.param({"scopes": "read:charge_points"}, "scopes", id="scopes-not-a-list"),
        pytest.param({"scopes": [1]}, "scopes", id="scope-not-a-string"),
        pytest.param({"operation": 7}, "operation", id="operation-not-a-string"),
        pytest.param({"scopes": [f"s{i}" for i in range(21)]}, "scopes", id="21-scopes"),
        pytest.param({"operation": "x" * 201}, "operation", id="operation-201-chars"),
        pytest.param({"keys": ["x"]}, "keys", id="unknown-field"),
        pytest.param({"scopes": ["read:billing\x00"]}, "scopes.0", id="scope-with-nul"),
        pytest.param({"scopes": ["ok", "read\x1b[2J"]}, "scopes.1", id="scope-with-escape"),
        pytest.param({"scopes": ["read:\u202ebilling"]}, "scopes.0", id="scope-with-bidi"),
        pytest.param({"scopes": ["s" * 101]}, "scopes.0", id="scope-101-chars"),
    ],
)
async def test_invalid_request_is_422_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    body: dict[str, Any],
    names: str,
) -> None:
    # A real key in the body: verifying it anyway would record a use (and change the database).
    key = await make_key(runtime, tenant, "svc")
    before = await snapshot(runtime)

    response = await client.post(VERIFY, json={"key": key.secret, **body})

    assert response.status_code == 422
    error = response.json()
    assert error["code"] == "INVALID_INPUT"
    assert names in error["message"]
    await runtime.recorder.flush()
    assert await snapshot(runtime) == before


async def test_body_without_a_key_is_422_naming_the_key(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    before = await snapshot(runtime)

    response = await client.post(VERIFY, json={"scopes": ["read:charge_points"]})

    assert response.status_code == 422
    assert response.json()["message"].startswith("Invalid verify request: key")
    assert await snapshot(runtime) == before


async def test_body_that_is_a_json_array_is_422(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    before = await snapshot(runtime)

    response = await client.post(VERIFY, json=[tenant.admin_key])

    assert response.status_code == 422
    assert response.json()["code"] == "INVALID_INPUT"
    assert await snapshot(runtime) == before


async def test_twenty_scopes_and_a_200_character_operation_are_accepted(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "svc")

    response = await verify(
        client, key.secret, ["read:charge_points"] * 20, operation="GET /" + "x" * 195
    )

    assert response.status_code == 200
    assert response.json()["valid"] is True


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_body_over_16_kib_is_413_and_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, declared: bool
) -> None:
    key = await make_key(runtime, tenant, "svc")
    before = await snapshot(runtime)
    body = json.dumps({"key": key.secret, "operation": "x" * 17_000}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = await client.post(VERIFY, content=body if declared else chunks())

    assert response.status_code == 413
    assert response.json()["code"] == "PAYLOAD_TOO_LARGE"
    await runtime.recorder.flush()
    assert await snapshot(runtime) == before


@pytest.mark.parametrize(("method", "path"), [("GET", VERIFY), ("POST", "/v1/auth")])
async def test_a_data_plane_path_with_the_wrong_method_is_405_naming_the_right_one(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)

    assert response.status_code == 405
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"
    assert response.headers["Allow"] in {"POST", "GET, HEAD"}


async def test_an_unexpected_failure_is_a_500_that_shows_nothing_of_it(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = await make_key(runtime, tenant, "svc")

    async def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("SELECT secret_detail FROM somewhere")

    monkeypatch.setattr(runtime.verifier, "verify", broken)
    response = await client.post(VERIFY, json={"key": key.secret})

    assert response.status_code == 500
    assert response.json() == {
        "code": "INTERNAL",
        "message": "Internal error; the service logged it.",
        "hint": None,
    }
    assert "SELECT" not in response.text
    assert key.secret not in caplog.text


# --- what the body sends never stops usage metering --------------------------------------------


async def _stored_operations(runtime: Runtime) -> dict[tuple[str, str], int]:
    """Stored minute-bucket counts per (key id, operation)."""
    statement = text(
        "SELECT api_key_id, operation, SUM(count) FROM usage_buckets"
        " WHERE granularity = 'MINUTE' GROUP BY api_key_id, operation"
    )
    async with runtime.engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    return {(key_id, operation): int(count) for key_id, operation, count in rows}


@pytest.mark.parametrize(
    ("operation", "label"),
    [
        pytest.param("GET /x\u0000y", "GET /x\ufffdy", id="nul"),
        pytest.param("GET /x\u001b[2Jy", "GET /x\ufffd[2Jy", id="escape"),
        pytest.param("GET /x\u202ey", "GET /x\ufffdy", id="bidi-override"),
        pytest.param("GET /x\ny", "GET /x\ufffdy", id="line-break"),
    ],
)
async def test_an_operation_no_label_may_hold_is_counted_cleaned_beside_other_organizations(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    other_tenant: Tenant,
    operation: str,
    label: str,
) -> None:
    response = await verify(client, tenant.admin_key, operation=operation)
    assert response.json()["valid"] is True
    for _ in range(200):
        await verify(client, other_tenant.admin_key, operation="GET /x")

    await runtime.recorder.flush()
    await verify(client, other_tenant.admin_key, operation="GET /x")
    await runtime.recorder.flush()  # and every flush after it

    assert await _stored_operations(runtime) == {
        (tenant.admin_key_id, label): 1,
        (other_tenant.admin_key_id, "GET /x"): 201,
    }
    assert runtime.recorder.refused_buckets == {}


async def test_a_lone_surrogate_in_the_body_is_not_json_and_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    before = await snapshot(runtime)

    response = await client.post(
        VERIFY,
        content=f'{{"key": "{tenant.admin_key}", "operation": "Q\\udc00"}}',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["message"] == "The body is not valid JSON."
    await runtime.recorder.flush()
    assert await snapshot(runtime) == before


async def test_a_refused_scope_name_is_quoted_as_a_short_clean_excerpt(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    scope = "read:" + "\x00" * 95

    response = await verify(client, tenant.admin_key, [scope])

    assert response.status_code == 422
    message = response.json()["message"]
    assert message.startswith(
        "Invalid verify request: scopes.0 holds a NUL character at position 5"
    )
    assert "\x00" not in message
    assert len(message) < 250
