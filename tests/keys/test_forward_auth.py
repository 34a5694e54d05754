"""``GET /v1/auth``: forward authentication for nginx ``auth_request`` and Traefik ForwardAuth."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.auth.principal import Caller
from app.auth.secret import generate_secret
from app.keys import schemas, service
from app.kit.db import session_scope
from app.runtime import Runtime
from tests.support import IssuedKey, Tenant, gql, make_key

AUTH = "/v1/auth"

REVOKE_KEY = """
mutation Revoke($id: ID!) {
  revokeApiKey(id: $id) { apiKey { id status } userErrors { code message } }
}
"""


async def auth(
    client: httpx.AsyncClient,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    params: dict[str, str] | list[tuple[str, str]] | None = None,
) -> httpx.Response:
    pairs = params.items() if isinstance(params, dict) else params or []
    return await client.get(AUTH, headers=headers or {}, params=tuple(pairs))


def assert_refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """A refusal: the status, a JSON body with code, message and hint, and the same JSON in
    X-Keyhouse-Error (nginx drops the body of an auth subrequest)."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "hint"}
    assert body["code"] == code
    assert body["message"]
    assert body["hint"]
    assert json.loads(response.headers["X-Keyhouse-Error"]) == body
    assert response.headers["X-Keyhouse-Code"] == code
    assert "X-Api-Key-Id" not in response.headers
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    return body


async def limited_key(runtime: Runtime, tenant: Tenant, requests: int) -> IssuedKey:
    caller = Caller(tenant.organization_id, runtime.catalogue.names(), tenant.admin_key_id)
    async with session_scope(runtime.sessionmaker) as session:
        created = await service.create_key(
            session,
            caller,
            schemas.KeyCreate(
                name="limited",
                scopes=["read:charge_points"],
                rate_limit=schemas.RateLimit(requests=requests, per_seconds=60),
            ),
            catalogue=runtime.catalogue,
            key_prefix=runtime.settings.key_prefix,
            broadcast=runtime.broadcast,
        )
    assert isinstance(created, schemas.KeyCreated), created
    return IssuedKey(created.api_key.id, created.secret, created.api_key.hint)


@pytest.fixture
async def key(runtime: Runtime, tenant: Tenant) -> IssuedKey:
    return await make_key(runtime, tenant, "gateway", ["read:charge_points", "read:billing"])


# --- where the key comes from ------------------------------------------------------------------


async def test_key_in_x_api_key_header_is_allowed_with_identity_headers(
    client: httpx.AsyncClient, tenant: Tenant, key: IssuedKey
) -> None:
    response = await auth(client, {"X-API-Key": key.secret})

    assert response.status_code == 200
    assert response.headers["X-Api-Key-Id"] == key.id
    assert response.headers["X-Organization-Id"] == tenant.organization_id
    assert response.headers["X-Api-Key-Scopes"] == "read:billing read:charge_points"
    assert "X-Keyhouse-Error" not in response.headers


async def test_allowed_request_carries_rate_limit_headers(
    client: httpx.AsyncClient, key: IssuedKey
) -> None:
    response = await auth(client, {"X-API-Key": key.secret})

    assert response.headers["X-RateLimit-Limit"] == "1000"
    assert response.headers["X-RateLimit-Remaining"] == "999"
    assert int(response.headers["X-RateLimit-Reset"]) >= int(time.time())


async def test_key_in_authorization_bearer_is_allowed(
    client: httpx.AsyncClient, key: IssuedKey
) -> None:
    response = await auth(client, {"Authorization": f"Bearer {key.secret}"})

    assert response.status_code == 200
    assert response.headers["X-Api-Key-Id"] == key.id


async def test_key_in_the_query_of_nginx_original_uri_is_allowed(
    client: httpx.AsyncClient, key: IssuedKey
) -> None:
    response = await auth(client, {"X-Original-URI": f"/v3/poi?output=json&key={key.secret}"})

    assert response.status_code == 200
    assert response.headers["X-Api-Key-Id"] == key.id


async def test_key_in_the_query_of_traefik_forwarded_uri_is_allowed(
    client: httpx.AsyncClient, key: IssuedKey
) -> None:
    response = await auth(client, {"X-Forwarded-Uri": f"/v3/poi?key={key.secret}&output=json"})

    assert response.status_code == 200
    assert response.headers["X-Api-Key-Id"] == key.id


async def test_same_key_in_header_and_query_is_allowed(
    client: httpx.AsyncClient, key: IssuedKey
) -> None:
    response = await auth(
        client, {"X-API-Key": key.secret, "X-Original-URI": f"/v3/poi?key={key.secret}"}
    )

    assert response.status_code == 200
    assert response.headers["X-Api-Key-Id"] == key.id


async def test_key_given_twice_in_the_query_with_the_same_value_is_allowed(
    client: httpx.AsyncClient, key: IssuedKey
) -> None:
    response = await auth(
        client, {"X-Original-URI": f"/v3/poi?key={key.secret}&output=json&key={key.secret}"}
    )

    assert response.status_code == 200


# --- required scopes ---------------------------------------------------------------------------


async def test_scopes_repeated_in_the_auth_url_are_all_required(
    client: httpx.AsyncClient, key: IssuedKey
) -> None:
    held = await auth(
        client,
        {"X-API-Key": key.secret},
        [("scope", "read:charge_points"), ("scope", "read:billing")],
    )
    lacking = await auth(
        client,
        {"X-API-Key": key.secret},
        [("scope", "read:charge_points"), ("scope", "write:billing")],
    )

    assert held.status_code == 200
    body = assert_refused(lacking, 403, "INSUFFICIENT_SCOPE")
    assert "'write:billing'" in body["message"]


async def test_comma_separated_scopes_in_the_auth_url_are_all_required(
    client: httpx.AsyncClient, key: IssuedKey
) -> None:
    held = await auth(
        client, {"X-API-Key": key.secret}, {"scope": "read:charge_points,read:billing"}
    )
    lacking = await auth(
        client, {"X-API-Key": key.secret}, {"scope": "read:charge_points,write:billing"}
    )

    assert held.status_code == 200
    body = assert_refused(lacking, 403, "INSUFFICIENT_SCOPE")
    assert "'write:billing'" in body["message"]


async def test_scopes_from_the_x_required_scopes_header_are_required(
    client: httpx.AsyncClient, key: IssuedKey
) -> None:
    held = await auth(
        client, {"X-API-Key": key.secret, "X-Required-Scopes": "read:billing read:charge_points"}
    )
    lacking = await auth(client, {"X-API-Key": key.secret, "X-Required-Scopes": "write:billing"})

    assert held.status_code == 200
    body = assert_refused(lacking, 403, "INSUFFICIENT_SCOPE")
    assert "'write:billing'" in body["message"]


async def test_scopes_of_the_auth_url_and_the_header_are_all_required(
    client: httpx.AsyncClient, key: IssuedKey
) -> None:
    url_scope = {"scope": "read:charge_points"}
    held = await auth(
        client, {"X-API-Key": key.secret, "X-Required-Scopes": "read:billing"}, url_scope
    )
    lacking = await auth(
        client, {"X-API-Key": key.secret, "X-Required-Scopes": "write:billing"}, url_scope
    )

    assert held.status_code == 200
    body = assert_refused(lacking, 403, "INSUFFICIENT_SCOPE")
    assert "'write:billing'" in body["message"]
    assert "read:charge_points" not in body["message"]  # held, so not named as missing


async def test_more_than_20_required_scopes_is_a_bad_request_that_spends_nothing(
    client: httpx.AsyncClient, key: IssuedKey
) -> None:
    scopes = " ".join(f"read:thing{number}" for number in range(21))

    response = await auth(client, {"X-API-Key": key.secret, "X-Required-Scopes": scopes})

    assert response.status_code == 400
    assert response.json() == {
        "code": "BAD_REQUEST",
        "message": "At most 20 required scopes.",
        "hint": None,
    }
    # Refused before verification: the key's budget is untouched.
    allowed = await auth(client, {"X-API-Key": key.secret})
    assert allowed.headers["X-RateLimit-Remaining"] == "999"


async def test_unknown_required_scope_is_named_as_unknown(
    client: httpx.AsyncClient, key: IssuedKey
) -> None:
    response = await auth(client, {"X-API-Key": key.secret}, {"scope": "read:chargepoints"})

    body = assert_refused(response, 403, "INSUFFICIENT_SCOPE")
    assert "'read:chargepoints' (not a known scope)" in body["message"]


# --- refusals ----------------------------------------------------------------------------------


async def test_request_without_a_key_is_401_missing(client: httpx.AsyncClient) -> None:
    assert_refused(await auth(client, {"X-Original-URI": "/v3/poi?output=json"}), 401, "MISSING")


async def test_empty_bearer_is_401_missing(client: httpx.AsyncClient) -> None:
    assert_refused(await auth(client, {"Authorization": "Bearer "}), 401, "MISSING")


async def test_key_in_the_url_path_is_missing_with_a_hint_about_query_syntax(
    client: httpx.AsyncClient,
) -> None:
    response = await auth(client, {"X-Original-URI": "/v3/poi/key/output=json"})

    body = assert_refused(response, 401, "MISSING")
    assert "'?'" in body["hint"]
    assert "'&'" in body["hint"]


async def test_mistyped_key_is_401_malformed(client: httpx.AsyncClient, key: IssuedKey) -> None:
    assert_refused(await auth(client, {"X-API-Key": key.secret[:-1]}), 401, "MALFORMED")


async def test_a_bearer_prefix_in_x_api_key_is_named_with_its_header(
    client: httpx.AsyncClient, key: IssuedKey
) -> None:
    response = await auth(client, {"X-API-Key": f"Bearer {key.secret}"})

    body = assert_refused(response, 401, "MALFORMED")
    assert "starts with 'Bearer'" in body["message"]
    assert "alone in the X-API-Key header" in body["hint"]


async def test_quoted_key_is_401_quoted(client: httpx.AsyncClient, key: IssuedKey) -> None:
    assert_refused(await auth(client, {"X-API-Key": f"'{key.secret}'"}), 401, "QUOTED")


async def test_key_with_surrounding_whitespace_is_allowed(
    client: httpx.AsyncClient, key: IssuedKey
) -> None:
    response = await auth(client, {"X-Original-URI": f"/v3/poi?key=%20{key.secret}%20"})

    assert response.status_code == 200
    assert response.headers["X-Api-Key-Id"] == key.id


async def test_never_issued_key_is_401_unknown(client: httpx.AsyncClient) -> None:
    assert_refused(await auth(client, {"X-API-Key": generate_secret("kh")}), 401, "UNKNOWN")


async def test_revoked_key_is_401_revoked_on_the_next_request(
    client: httpx.AsyncClient, tenant: Tenant, key: IssuedKey
) -> None:
    assert (await auth(client, {"X-API-Key": key.secret})).status_code == 200  # now cached
    revoked = await gql(client, REVOKE_KEY, {"id": key.id}, key=tenant.admin_key)
    assert revoked.data["revokeApiKey"]["apiKey"]["status"] == "REVOKED", revoked.body

    assert_refused(await auth(client, {"X-API-Key": key.secret}), 401, "REVOKED")


async def test_expired_key_is_401_expired(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await make_key(runtime, tenant, "short-lived", expires_in_days=1)
    assert (await auth(client, {"X-API-Key": key.secret})).status_code == 200  # now cached
    in_two_days = time.time() + 2 * 86400
    monkeypatch.setattr("app.keys.verification.time.time", lambda: in_two_days)

    assert_refused(await auth(client, {"X-API-Key": key.secret}), 401, "EXPIRED")


async def test_different_keys_in_header_and_query_are_401_conflicting(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, key: IssuedKey
) -> None:
    other = await make_key(runtime, tenant, "other")

    response = await auth(
        client, {"X-API-Key": key.secret, "X-Original-URI": f"/v3/poi?key={other.secret}"}
    )

    body = assert_refused(response, 401, "CONFLICTING")
    assert "X-API-Key header" in body["message"]
    assert "key query parameter" in body["message"]


async def test_different_keys_in_two_x_api_key_headers_are_401_conflicting(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, key: IssuedKey
) -> None:
    other = await make_key(runtime, tenant, "other")

    response = await auth(client, [("X-API-Key", key.secret), ("X-API-Key", other.secret)])

    body = assert_refused(response, 401, "CONFLICTING")
    assert "2 different keys (2 × X-API-Key header)" in body["message"]


async def test_different_keys_in_two_authorization_headers_are_401_conflicting(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, key: IssuedKey
) -> None:
    other = await make_key(runtime, tenant, "other")

    response = await auth(
        client,
        [("Authorization", f"Bearer {key.secret}"), ("Authorization", f"Bearer {other.secret}")],
    )

    assert_refused(response, 401, "CONFLICTING")


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(("Authorization", "Basic dXNlcjpwYXNz"), id="Basic credentials"),
        pytest.param(("X-API-Key", ""), id="an empty X-API-Key"),
    ],
)
async def test_a_header_without_a_key_beside_one_with_the_key_is_allowed(
    client: httpx.AsyncClient, key: IssuedKey, first: tuple[str, str]
) -> None:
    # Only key material counts: what carries none neither conflicts nor hides the key.
    name = first[0]
    value = f"Bearer {key.secret}" if name == "Authorization" else key.secret

    response = await auth(client, [first, (name, value)])

    assert response.status_code == 200, response.text
    assert response.headers["X-Api-Key-Id"] == key.id


async def test_the_same_key_in_two_x_api_key_headers_is_allowed(
    client: httpx.AsyncClient, key: IssuedKey
) -> None:
    response = await auth(client, [("X-API-Key", key.secret), ("X-API-Key", key.secret)])

    assert response.status_code == 200, response.text


async def test_key_given_twice_in_the_query_with_different_values_is_401_conflicting(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, key: IssuedKey
) -> None:
    other = await make_key(runtime, tenant, "other")

    response = await auth(
        client, {"X-Original-URI": f"/v3/poi?key={key.secret}&key={other.secret}"}
    )

    assert_refused(response, 401, "CONFLICTING")


async def test_key_over_its_rate_limit_is_429_with_retry_after(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    limited = await limited_key(runtime, tenant, requests=2)
    statuses = [(await auth(client, {"X-API-Key": limited.secret})).status_code for _ in range(2)]
    assert statuses == [200, 200]

    response = await auth(client, {"X-API-Key": limited.secret})

    assert_refused(response, 429, "RATE_LIMITED")
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert "WWW-Authenticate" not in response.headers


async def test_rate_limited_request_can_be_answered_403_for_nginx(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    limited = await limited_key(runtime, tenant, requests=1)
    assert (await auth(client, {"X-API-Key": limited.secret})).status_code == 200

    response = await auth(client, {"X-API-Key": limited.secret}, {"ratelimit_status": "403"})

    assert_refused(response, 403, "RATE_LIMITED")
    assert response.headers["X-Keyhouse-Code"] == "RATE_LIMITED"
    assert 1 <= int(response.headers["Retry-After"]) <= 60


async def test_insufficient_scope_spends_no_rate_limit_budget(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    limited = await limited_key(runtime, tenant, requests=2)
    for _ in range(4):
        refused = await auth(client, {"X-API-Key": limited.secret}, {"scope": "write:billing"})
        assert refused.status_code == 403

    response = await auth(client, {"X-API-Key": limited.secret})

    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == "1"


async def test_head_request_is_answered_like_get(client: httpx.AsyncClient, key: IssuedKey) -> None:
    response = await client.head(AUTH, headers={"X-API-Key": key.secret})

    assert response.status_code == 200
    assert response.headers["X-Api-Key-Id"] == key.id


# --- the key never leaks into labels or logs ---------------------------------------------------


async def test_usage_operation_is_the_original_method_and_path_without_the_query(
    client: httpx.AsyncClient, runtime: Runtime, key: IssuedKey
) -> None:
    response = await auth(
        client,
        {"X-Original-URI": f"/v3/poi?key={key.secret}&output=json", "X-Original-Method": "POST"},
    )
    assert response.status_code == 200

    await runtime.recorder.flush()

    async with runtime.engine.connect() as connection:
        operations = (
            (
                await connection.execute(
                    text("SELECT DISTINCT operation FROM usage_buckets WHERE api_key_id = :id"),
                    {"id": key.id},
                )
            )
            .scalars()
            .all()
        )
    assert operations == ["POST /v3/poi"]


async def test_key_from_the_query_never_appears_in_the_log(
    client: httpx.AsyncClient, key: IssuedKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    unknown = generate_secret("kh")

    await auth(client, {"X-Original-URI": f"/v3/poi?key={key.secret}&output=json"})
    await auth(client, {"X-Original-URI": f"/v3/poi?key={unknown}"})
    await auth(client, {"X-Original-URI": f"/v3/poi?key={key.secret}"}, {"scope": "write:billing"})

    assert caplog.records  # the requests were logged at all
    assert key.secret not in caplog.text
    assert unknown not in caplog.text


# --- what the use is counted under -------------------------------------------------------------


async def _labels(runtime: Runtime, key_id: str) -> dict[str, int]:
    """Stored minute-bucket counts of one key per operation label."""
    await runtime.recorder.flush()
    statement = text(
        "SELECT operation, SUM(count) FROM usage_buckets"
        " WHERE api_key_id = :id AND granularity = 'MINUTE' GROUP BY operation"
    )
    async with runtime.engine.connect() as connection:
        rows = (await connection.execute(statement, {"id": key_id})).all()
    return {operation: int(count) for operation, count in rows}


async def test_identifiers_in_the_path_are_one_label(
    client: httpx.AsyncClient, runtime: Runtime, key: IssuedKey
) -> None:
    for path in ("/poi/123", "/poi/124", "/poi/6f1c2d3e-1111-4a2b-9c3d-123456789abc"):
        response = await auth(client, {"X-API-Key": key.secret, "X-Original-URI": path})
        assert response.status_code == 200

    assert await _labels(runtime, key.id) == {"GET /poi/{id}": 3}


async def test_a_key_pasted_into_the_path_is_not_stored_in_the_label(
    client: httpx.AsyncClient, runtime: Runtime, key: IssuedKey
) -> None:
    response = await auth(
        client, {"X-API-Key": key.secret, "X-Original-URI": f"/v3/poi/{key.secret}"}
    )
    assert response.status_code == 200

    assert await _labels(runtime, key.id) == {"GET /v3/poi/{id}": 1}


async def test_the_gateways_operation_header_names_the_use(
    client: httpx.AsyncClient, runtime: Runtime, key: IssuedKey
) -> None:
    headers = {
        "X-API-Key": key.secret,
        "X-Original-URI": "/poi/123",
        "X-Keyhouse-Operation": " list-charge-points ",
    }
    assert (await auth(client, headers)).status_code == 200

    assert await _labels(runtime, key.id) == {"list-charge-points": 1}


async def test_a_utf8_operation_header_is_read_as_utf8(
    client: httpx.AsyncClient, runtime: Runtime, key: IssuedKey
) -> None:
    headers = [("X-API-Key", key.secret), ("X-Keyhouse-Operation", "Gäste".encode())]
    response = await client.get(AUTH, headers=headers)  # type: ignore[arg-type]
    assert response.status_code == 200

    assert await _labels(runtime, key.id) == {"Gäste": 1}


@pytest.mark.parametrize(
    ("headers", "label"),
    [
        pytest.param({"X-Original-URI": "/x\x00y"}, "GET /x\ufffdy", id="nul-in-path"),
        pytest.param({"X-Original-URI": "/x\x1by"}, "GET /x\ufffdy", id="escape-in-path"),
        pytest.param(
            {"X-Original-URI": "/x", "X-Original-Method": "GE\x00T"},
            "GE\ufffdT /x",
            id="nul-in-method",
        ),
        pytest.param({"X-Keyhouse-Operation": "op\x00x"}, "op\ufffdx", id="nul-in-operation"),
        pytest.param(
            {
                "X-Keyhouse-Operation": "op\udc00x".encode("utf-8", "surrogatepass").decode(
                    "latin-1"
                )
            },
            "op\ufffd\ufffd\ufffdx",
            id="encoded-surrogate-in-operation",
        ),
        pytest.param({"X-Keyhouse-Operation": "o" * 500}, "o" * 200, id="long-operation"),
    ],
)
async def test_a_label_no_database_may_hold_is_counted_cleaned_beside_other_organizations(
    client: httpx.AsyncClient,
    runtime: Runtime,
    key: IssuedKey,
    other_tenant: Tenant,
    headers: dict[str, str],
    label: str,
) -> None:
    request_headers = [
        (name, value.encode("latin-1"))
        for name, value in {"X-API-Key": key.secret, **headers}.items()
    ]
    response = await client.get(AUTH, headers=request_headers)  # type: ignore[arg-type]
    assert response.status_code == 200
    for _ in range(200):
        await auth(client, {"X-API-Key": other_tenant.admin_key, "X-Original-URI": "/x"})

    assert await _labels(runtime, key.id) == {label: 1}
    assert await _labels(runtime, other_tenant.admin_key_id) == {"GET /x": 200}
    assert runtime.recorder.refused_buckets == {}


@pytest.mark.parametrize(
    "scopes",
    [
        pytest.param("read:charge_points\x00", id="nul"),
        pytest.param("read:\x1b[2J", id="escape"),
        pytest.param("s" * 101, id="101-chars"),
    ],
)
async def test_a_required_scope_no_key_could_hold_is_a_bad_request_that_spends_nothing(
    client: httpx.AsyncClient, runtime: Runtime, key: IssuedKey, scopes: str
) -> None:
    request_headers = [
        ("X-API-Key", key.secret.encode()),
        ("X-Required-Scopes", scopes.encode("latin-1")),
    ]
    response = await client.get(AUTH, headers=request_headers)  # type: ignore[arg-type]

    assert response.status_code == 400
    message = response.json()["message"]
    assert message.startswith("Invalid required scope: scopes.")
    assert "\x00" not in message
    assert "\x1b" not in message
    assert await _labels(runtime, key.id) == {}
