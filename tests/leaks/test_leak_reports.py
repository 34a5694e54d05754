"""POST /v1/keys/leaked: a secret scanner (GitHub's partner program format) reports tokens it
found in public. Our keys are flagged once, revoked unless the organization says NOTIFY, and
announced (key.leaked, the audit log); anything else is a false_positive that writes nothing; an
unsigned report is refused and changes nothing."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.auth.secret import generate_secret, secret_pattern
from app.config import Settings
from app.runtime import Runtime
from tests.support import IssuedKey, Tenant, count_statements, gql, make_key, snapshot
from tests.webhooks.support import rows

SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
KEY_ID = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


PUBLIC_KEYS = json.dumps(
    {"public_keys": [{"key_identifier": KEY_ID, "key": _pem(SIGNING_KEY), "is_current": True}]}
)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        usage_flush_interval_seconds=3600,
        deliver_webhooks=False,
        leak_report_public_keys=PUBLIC_KEYS,
    )


def signed(body: bytes, key: ec.EllipticCurvePrivateKey = SIGNING_KEY) -> dict[str, str]:
    signature = key.sign(body, ec.ECDSA(hashes.SHA256()))
    return {
        "GITHUB-PUBLIC-KEY-IDENTIFIER": KEY_ID,
        "GITHUB-PUBLIC-KEY-SIGNATURE": base64.b64encode(signature).decode(),
        "Content-Type": "application/json",
    }


def found(token: str, url: str = "https://github.com/acme/app/blob/main/.env") -> dict[str, str]:
    return {"token": token, "type": "keyhouse_api_key", "url": url, "source": "content"}


async def report(client: httpx.AsyncClient, *tokens: dict[str, str]) -> httpx.Response:
    body = json.dumps(list(tokens)).encode()
    return await client.post("/v1/keys/leaked", content=body, headers=signed(body))


async def verify(client: httpx.AsyncClient, key: IssuedKey) -> str:
    response = await client.post("/v1/keys/verify", json={"key": key.secret})
    code: str = response.json()["code"]
    return code


async def test_a_live_key_is_revoked_flagged_and_announced(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "ci")
    assert await verify(client, key) == "VALID"  # cached by this instance

    response = await report(client, found(key.secret))

    assert response.status_code == 200
    assert response.json() == [
        {"token_raw": key.secret, "token_type": "keyhouse_api_key", "label": "true_positive"}
    ]
    assert await verify(client, key) == "REVOKED"
    [(details,)] = await rows(
        runtime,
        f"SELECT details FROM audit_events WHERE action = 'KEY_LEAKED' AND api_key_id = '{key.id}'",
    )
    assert json.loads(details) == {
        "action": "REVOKE",
        "source": "content",
        "url": "https://github.com/acme/app/blob/main/.env",
    }
    events = await rows(
        runtime,
        f"SELECT type, data FROM outbox_events WHERE subject_id = '{key.id}' ORDER BY sequence",
    )
    assert [kind for kind, _ in events] == ["key.created", "key.leaked", "key.revoked"]
    leaked = json.loads(events[1][1])
    assert leaked["details"]["url"] == "https://github.com/acme/app/blob/main/.env"
    assert leaked["key"]["leakedAt"] is not None
    listed = await gql(client, "{ apiKeys { nodes { id leakedAt status } } }", key=tenant.admin_key)
    [node] = [n for n in listed.data["apiKeys"]["nodes"] if n["id"] == key.id]
    assert node["leakedAt"] is not None
    assert node["status"] == "REVOKED"


async def test_under_notify_the_key_is_only_flagged(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    policy = await gql(
        client,
        "mutation { updateKeyPolicy(input: {leakedKeyAction: NOTIFY}) {"
        " organization { keyPolicy { leakedKeyAction } } userErrors { code } } }",
        key=tenant.admin_key,
    )
    assert policy.data["updateKeyPolicy"]["organization"]["keyPolicy"] == {
        "leakedKeyAction": "NOTIFY"
    }
    key = await make_key(runtime, tenant, "ci")

    response = await report(client, found(key.secret))

    assert response.json()[0]["label"] == "true_positive"
    assert await verify(client, key) == "VALID"
    kinds = await rows(runtime, f"SELECT type FROM outbox_events WHERE subject_id = '{key.id}'")
    assert sorted(kind for (kind,) in kinds) == ["key.created", "key.leaked"]


@pytest.mark.parametrize(
    "token",
    [
        "not a key at all",
        "",
        "kh_short",
        "ghp_" + "a" * 36,
        "kh_" + "a" * 38,  # the right shape, a wrong checksum
        "kh_" + "é" * 38,
        "\x00" * 40,
        "x" * 5000,
    ],
)
async def test_what_is_not_our_key_is_a_false_positive_without_a_query(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, token: str
) -> None:
    before = await snapshot(runtime)
    with count_statements(runtime.engine) as statements:
        response = await report(client, found(token))
    assert response.json() == [
        {"token_raw": token, "token_type": "keyhouse_api_key", "label": "false_positive"}
    ]
    assert [s for s in statements.statements if "api_keys" in s] == []
    assert await snapshot(runtime) == before


async def test_a_well_formed_unknown_key_is_a_false_positive_that_writes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    before = await snapshot(runtime)
    response = await report(client, found(generate_secret("kh")))
    assert response.json()[0]["label"] == "false_positive"
    assert await snapshot(runtime) == before


async def test_the_same_token_reported_twice_is_handled_once(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "ci")
    twice = await report(client, found(key.secret), found(key.secret, "https://gist.github.com/x"))
    again = await report(client, found(key.secret))

    assert [a["label"] for a in twice.json() + again.json()] == ["true_positive"] * 3
    audit = await rows(runtime, f"SELECT action FROM audit_events WHERE api_key_id = '{key.id}'")
    assert sorted(action for (action,) in audit) == ["KEY_CREATED", "KEY_LEAKED", "KEY_REVOKED"]


async def test_a_key_revoked_before_is_a_true_positive_revoked_once(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "old")
    await gql(
        client,
        "mutation($id: ID!) { revokeApiKey(id: $id) { userErrors { code } } }",
        {"id": key.id},
        key=tenant.admin_key,
    )
    response = await report(client, found(key.secret))
    assert response.json()[0]["label"] == "true_positive"
    revocations = await rows(
        runtime,
        f"SELECT count(*) FROM audit_events WHERE api_key_id = '{key.id}'"
        " AND action = 'KEY_REVOKED'",
    )
    assert revocations == [(1,)]


async def test_the_answer_never_names_the_organization(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "ci")
    response = await report(client, found(key.secret))
    assert tenant.organization_id not in response.text
    assert key.id not in response.text


def _tampered(body: bytes) -> dict[str, str]:
    headers = signed(body)
    headers["GITHUB-PUBLIC-KEY-SIGNATURE"] = base64.b64encode(
        b"\x30\x06\x02\x01\x01\x02\x01\x01"
    ).decode()
    return headers


@pytest.mark.parametrize(
    "headers_for",
    [
        lambda body: {"Content-Type": "application/json"},
        lambda body: signed(body, OTHER_KEY),
        lambda body: signed(b"[]"),
        lambda body: {**signed(body), "GITHUB-PUBLIC-KEY-IDENTIFIER": "another"},
        lambda body: {**signed(body), "GITHUB-PUBLIC-KEY-SIGNATURE": "not base64!"},
        _tampered,
    ],
)
async def test_a_report_whose_signature_fails_is_401_and_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, headers_for: Any
) -> None:
    key = await make_key(runtime, tenant, "ci")
    body = json.dumps([found(key.secret)]).encode()
    before = await snapshot(runtime)

    response = await client.post("/v1/keys/leaked", content=body, headers=headers_for(body))

    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"
    assert await snapshot(runtime) == before
    assert await verify(client, key) == "VALID"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b'{"token": "x"}', 422),
        (b'[{"url": "x"}]', 422),
        (json.dumps([found("x")] * 1001).encode(), 422),
    ],
)
async def test_a_signed_report_that_is_not_a_report_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, body: bytes, status: int
) -> None:
    before = await snapshot(runtime)
    response = await client.post("/v1/keys/leaked", content=body, headers=signed(body))
    assert response.status_code == status
    assert set(response.json()) == {"code", "message", "hint"}
    assert await snapshot(runtime) == before


async def test_without_reporters_keys_there_is_no_endpoint(database_url: str) -> None:
    from tests.support import serving

    settings = Settings(database_url=database_url, deliver_webhooks=False)
    async with serving(settings) as (_, client):
        response = await client.post("/v1/keys/leaked", content=b"[]")
    assert response.status_code == 404


# --- the regular expression a provider registers with secret scanners ----------------------


@pytest.mark.parametrize("prefix", ["kh", "acme"])
def test_the_pattern_finds_every_key_exactly(prefix: str) -> None:
    pattern = re.compile(secret_pattern(prefix))
    for _ in range(200):
        secret = generate_secret(prefix)
        text = f'API_KEY="{secret}"\nother={secret}&x=1 {secret}'
        assert pattern.findall(text) == [secret] * 3


@pytest.mark.parametrize(
    "near_miss",
    [
        "kh_" + "a" * 37,  # one short
        "kh_" + "a" * 39,  # one long
        "KH_" + "a" * 38,  # the prefix is lower case
        "kx_" + "a" * 38,
        "kh-" + "a" * 38,
        "kh_" + "a" * 20 + "-" + "a" * 17,
        "akh_" + "a" * 38,  # part of a longer word
        "_kh_" + "a" * 38,
        "kh_" + "a" * 38 + "_x",
        "kh_" + "a" * 37 + "é",
    ],
)
def test_the_pattern_ignores_near_misses(near_miss: str) -> None:
    assert re.search(secret_pattern("kh"), near_miss) is None
