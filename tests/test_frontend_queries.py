"""The dashboard's operations in ``frontend-queries/``: each file parses, holds one operation
named like the file, validates against the schema, and is executed against a seeded database
through the HTTP API with an organization's admin key."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from graphql import (
    GraphQLSchema,
    OperationDefinitionNode,
    parse,
    validate,
)
from graphql import build_schema as parse_sdl

from app.auth.principal import Caller
from app.config import Settings
from app.graphql.schema import build_schema
from app.keys import revocation as keys_revocation
from app.kit.db import session_scope
from app.kit.errors import UserError
from app.kit.timeutil import utcnow
from app.models.keys import ApiKey
from app.organizations.service import PolicyUpdate, PolicyUpdated, update_key_policy
from app.runtime import Runtime
from tests.support import GraphQLResult, IssuedKey, Tenant, gql, make_key

ROOT = Path(__file__).resolve().parents[1]
FRONTEND_QUERIES = ROOT / "frontend-queries"
QUERY_FILES = sorted(FRONTEND_QUERIES.glob("*.graphql"))

# The dashboard's pages need at least these (issue 2: overview, keys page, create, revoke,
# scopes; issue 5: the key-settings page).
REQUIRED = {
    "OrganizationOverview",
    "KeysPage",
    "CreateApiKey",
    "RevokeApiKey",
    "Scopes",
    "KeyPolicy",
    "UpdateKeyPolicy",
    "RotateApiKey",
    "AuditLog",
}

# Operation name -> the tests of this module that execute it (filled by @executes).
EXECUTED_HERE: dict[str, list[str]] = {}
F = TypeVar("F", bound=Callable[..., Any])


def executes(*operations: str) -> Callable[[F], F]:
    """Marks a test as executing these frontend operations (checked for every file)."""

    def mark(test: F) -> F:
        for operation in operations:
            EXECUTED_HERE.setdefault(operation, []).append(test.__name__)
        return test

    return mark


def _operation_text(operation: str) -> str:
    return (FRONTEND_QUERIES / f"{operation}.graphql").read_text()


async def run(
    client: httpx.AsyncClient,
    operation: str,
    variables: dict[str, Any] | None = None,
    *,
    key: str,
) -> GraphQLResult:
    """Sends a frontend operation as the dashboard does, and insists that it succeeded."""
    result = await gql(
        client, _operation_text(operation), variables, key=key, operation_name=operation
    )
    assert result.response.status_code == 200, result.body
    assert result.errors == [], result.errors
    assert result.data is not None
    return result


def _at(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value)


# --- Every file parses and validates ---------------------------------------------------------


def _code_schema() -> GraphQLSchema:
    return build_schema(Settings())._schema


def test_the_frontend_queries_directory_holds_the_dashboards_operations() -> None:
    names = {path.stem for path in QUERY_FILES}
    assert names >= REQUIRED, f"missing frontend queries: {sorted(REQUIRED - names)}"


@pytest.mark.parametrize("path", QUERY_FILES, ids=lambda path: path.name)
def test_a_frontend_query_holds_one_operation_named_like_its_file(path: Path) -> None:
    document = parse(path.read_text())
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    assert len(operations) == 1, f"{path.name}: one operation per file"
    assert operations[0].name is not None, f"{path.name}: the operation has no name"
    assert operations[0].name.value == path.stem, (
        f"{path.name}: the operation is named {operations[0].name.value!r}, not {path.stem!r}"
    )


@pytest.mark.parametrize("path", QUERY_FILES, ids=lambda path: path.name)
def test_a_frontend_query_validates_against_the_schema(path: Path) -> None:
    document = parse(path.read_text())
    # Against the code's schema, and against schema.graphql (what frontend tooling reads).
    for schema in (_code_schema(), parse_sdl((ROOT / "schema.graphql").read_text())):
        errors = validate(schema, document)
        assert errors == [], f"{path.name}: {[error.message for error in errors]}"


def _executed_elsewhere(file_name: str) -> list[Path]:
    """Test modules other than this one that read the file by name."""
    this = Path(__file__).resolve()
    return [
        module
        for module in sorted((ROOT / "tests").rglob("test_*.py"))
        if module.resolve() != this and f'"{file_name}"' in module.read_text()
    ]


@pytest.mark.parametrize("path", QUERY_FILES, ids=lambda path: path.name)
def test_a_frontend_query_is_executed_against_a_seeded_database(path: Path) -> None:
    assert path.stem in EXECUTED_HERE or _executed_elsewhere(path.name), (
        f"{path.name} is not executed by any test: add one here, decorated with "
        f"@executes({path.stem!r})"
    )


# --- A seeded organization --------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    """Acme's keys, oldest first: admin (every scope), charger (used once, expires in 30 days),
    billing, retired (revoked), lapsed (expired). Globex has a key of its own."""

    acme: Tenant
    globex: Tenant
    charger: IssuedKey
    billing: IssuedKey
    retired: IssuedKey
    lapsed: IssuedKey
    globex_key: IssuedKey
    retired_at: datetime

    @property
    def secrets(self) -> list[str]:
        keys = [self.charger, self.billing, self.retired, self.lapsed, self.globex_key]
        return [self.acme.admin_key, self.globex.admin_key, *(key.secret for key in keys)]


async def _verify(client: httpx.AsyncClient, secret: str) -> dict[str, Any]:
    response = await client.post("/v1/keys/verify", json={"key": secret, "operation": "test"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def seeded(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, other_tenant: Tenant
) -> Seeded:
    charger = await make_key(
        runtime, tenant, "charger-app", ["read:charge_points"], expires_in_days=30
    )
    billing = await make_key(runtime, tenant, "billing-sync", ["read:billing", "read:analytics"])
    retired = await make_key(runtime, tenant, "old-integration", ["read:charge_points"])
    lapsed = await make_key(runtime, tenant, "trial", ["read:sessions"], expires_in_days=1)
    globex_key = await make_key(runtime, other_tenant, "globex-app", ["read:charge_points"])

    operator = Caller(tenant.organization_id, runtime.catalogue.names())
    async with session_scope(runtime.sessionmaker) as session:
        revoked = await keys_revocation.revoke_key(
            session, operator, retired.id, broadcast=runtime.broadcast
        )
        assert not isinstance(revoked, UserError)
        assert revoked.revoked_at is not None
        retired_at = revoked.revoked_at
        # The trial ended yesterday.
        row = await session.get(ApiKey, lapsed.id)
        assert row is not None
        row.expires_at = utcnow() - timedelta(days=1)
        session.add(row)

    # The charger app authenticates once; its lastUsedAt reaches the database on the flush.
    assert (await _verify(client, charger.secret))["valid"] is True
    await runtime.recorder.flush()
    return Seeded(
        tenant,
        other_tenant,
        charger,
        billing,
        retired,
        lapsed,
        globex_key,
        retired_at,
    )


# --- Organization overview, keys page, scopes -------------------------------------------------


@executes("OrganizationOverview")
async def test_organization_overview_counts_the_keys_by_status_and_shows_the_policy(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    result = await run(client, "OrganizationOverview", key=seeded.acme.admin_key)

    organization = result.data["organization"]
    assert organization["id"] == seeded.acme.organization_id
    assert organization["name"] == "Acme"
    assert abs(_at(organization["createdAt"]) - utcnow()) < timedelta(minutes=5)
    assert organization["keyCounts"] == {
        "total": 5,
        "active": 3,
        "revoked": 1,
        "expired": 1,
        "superseded": 0,
    }
    assert organization["keyPolicy"] == {
        "singleActiveKey": False,
        "supersedeGraceHours": 0,
        "maxExpiresInDays": None,
        "requireExpiry": False,
        "leakedKeyAction": "REVOKE",
    }

    globex = await run(client, "OrganizationOverview", key=seeded.globex.admin_key)
    assert globex.data["organization"]["name"] == "Globex"
    assert globex.data["organization"]["keyCounts"]["total"] == 2


@executes("KeysPage")
async def test_keys_page_pages_through_the_keys_newest_first_with_their_details(
    client: httpx.AsyncClient, runtime: Runtime, seeded: Seeded
) -> None:
    first = await run(client, "KeysPage", {"first": 3}, key=seeded.acme.admin_key)
    page = first.data["apiKeys"]
    assert page["totalCount"] == 5
    assert page["pageInfo"]["hasNextPage"] is True
    assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
    second = await run(
        client,
        "KeysPage",
        {"first": 3, "after": page["pageInfo"]["endCursor"]},
        key=seeded.acme.admin_key,
    )
    rest = second.data["apiKeys"]
    assert rest["totalCount"] == 5
    assert rest["pageInfo"]["hasNextPage"] is False

    nodes = [edge["node"] for edge in [*page["edges"], *rest["edges"]]]
    by_name = {node["name"]: node for node in nodes}
    assert [node["name"] for node in nodes] == [
        "trial",
        "old-integration",
        "billing-sync",
        "charger-app",
        "admin",
    ]
    created = [_at(node["createdAt"]) for node in nodes]
    assert created == sorted(created, reverse=True)

    charger = by_name["charger-app"]
    assert charger["id"] == seeded.charger.id
    assert charger["hint"] == seeded.charger.hint
    assert charger["scopes"] == ["read:charge_points"]
    assert charger["status"] == "ACTIVE"
    assert charger["lastUsedAt"] is not None
    assert abs(_at(charger["lastUsedAt"]) - utcnow()) < timedelta(minutes=5)
    assert charger["expiresInDays"] == 30
    assert _at(charger["expiresAt"]) - _at(charger["createdAt"]) == timedelta(days=30)
    assert charger["revokedAt"] is None
    assert charger["deprecated"] is False
    assert charger["rateLimit"] == {
        "requests": runtime.settings.default_rate_limit_requests,
        "perSeconds": runtime.settings.default_rate_limit_per_seconds,
        "isDefault": True,
    }

    retired = by_name["old-integration"]
    assert retired["status"] == "REVOKED"
    assert _at(retired["revokedAt"]) == seeded.retired_at
    assert retired["lastUsedAt"] is None

    trial = by_name["trial"]
    assert trial["status"] == "EXPIRED"
    assert trial["expiresInDays"] == 0

    assert sorted(by_name["billing-sync"]["scopes"]) == ["read:analytics", "read:billing"]
    assert by_name["admin"]["id"] == seeded.acme.admin_key_id
    assert set(by_name["admin"]["scopes"]) == set(runtime.catalogue.names())

    # Another organization's key never shows; no secret ever does.
    for result in (first, second):
        assert seeded.globex_key.id not in result.response.text
        for secret in seeded.secrets:
            assert secret not in result.response.text


@executes("KeysPage")
@pytest.mark.parametrize(
    ("key_filter", "expected"),
    [
        ({"status": "ACTIVE"}, ["billing-sync", "charger-app", "admin"]),
        ({"status": "REVOKED"}, ["old-integration"]),
        ({"status": "EXPIRED"}, ["trial"]),
        ({"status": "ALL"}, ["trial", "old-integration", "billing-sync", "charger-app", "admin"]),
        ({"scope": "read:billing"}, ["billing-sync", "admin"]),
        ({"expiringWithinDays": 31}, ["charger-app"]),
        ({"status": "ACTIVE", "scope": "read:charge_points"}, ["charger-app", "admin"]),
    ],
    ids=lambda value: re.sub(r"\W+", "-", str(value)).strip("-"),
)
async def test_keys_page_filters_by_status_scope_and_expiry(
    client: httpx.AsyncClient, seeded: Seeded, key_filter: dict[str, Any], expected: list[str]
) -> None:
    result = await run(client, "KeysPage", {"filter": key_filter}, key=seeded.acme.admin_key)

    connection = result.data["apiKeys"]
    assert [edge["node"]["name"] for edge in connection["edges"]] == expected
    assert connection["totalCount"] == len(expected)


@executes("Scopes")
async def test_scopes_lists_the_catalogue_with_descriptions(
    client: httpx.AsyncClient, runtime: Runtime, seeded: Seeded
) -> None:
    result = await run(client, "Scopes", key=seeded.billing.secret)

    scopes = {scope["name"]: scope["description"] for scope in result.data["scopes"]}
    assert set(scopes) == set(runtime.catalogue.names())
    assert {"read:api_keys", "write:api_keys", "read:charge_points", "read:billing"} <= set(scopes)
    assert scopes["read:charge_points"] == "Read charge point data and status"
    assert all(description.strip() for description in scopes.values())


# --- Creating and revoking keys ---------------------------------------------------------------


@executes("CreateApiKey")
async def test_create_api_key_returns_the_new_key_and_its_secret_once(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    variables = {
        "input": {
            "name": "home-assistant",
            "scopes": ["read:charge_points", "read:sessions"],
            "expiresInDays": 90,
            "rateLimit": {"requests": 100, "perSeconds": 60},
        }
    }
    result = await run(client, "CreateApiKey", variables, key=seeded.acme.admin_key)

    payload = result.data["createApiKey"]
    assert payload["userErrors"] == []
    assert payload["supersededApiKeys"] == []
    secret = payload["secret"]
    assert isinstance(secret, str)
    assert secret.startswith("kh_")
    created = payload["apiKey"]
    assert created["name"] == "home-assistant"
    assert sorted(created["scopes"]) == ["read:charge_points", "read:sessions"]
    assert created["status"] == "ACTIVE"
    assert created["expiresInDays"] == 90
    assert _at(created["expiresAt"]) - _at(created["createdAt"]) == timedelta(days=90)
    assert created["rateLimit"] == {"requests": 100, "perSeconds": 60, "isDefault": False}
    assert created["hint"].startswith(secret[:6])
    assert created["hint"].endswith(secret[-4:])

    # The secret works, as the key the answer describes, with exactly its scopes.
    verified = await _verify(client, secret)
    assert verified["valid"] is True
    assert verified["keyId"] == created["id"]
    assert verified["scopes"] == ["read:charge_points", "read:sessions"]

    # The keys page now lists it first, without its secret.
    page = await run(client, "KeysPage", {"first": 1}, key=seeded.acme.admin_key)
    assert page.data["apiKeys"]["totalCount"] == 6
    assert page.data["apiKeys"]["edges"][0]["node"]["id"] == created["id"]
    assert secret not in page.response.text


@executes("CreateApiKey")
async def test_create_api_key_reports_a_taken_name_as_a_user_error(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    variables = {"input": {"name": "charger-app", "scopes": ["read:charge_points"]}}
    result = await run(client, "CreateApiKey", variables, key=seeded.acme.admin_key)

    payload = result.data["createApiKey"]
    assert payload["apiKey"] is None
    assert payload["secret"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("NAME_TAKEN", "name")]
    assert "charger-app" in payload["userErrors"][0]["message"]


@executes("RevokeApiKey")
async def test_revoke_api_key_revokes_at_once_and_idempotently(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    result = await run(client, "RevokeApiKey", {"id": seeded.charger.id}, key=seeded.acme.admin_key)

    payload = result.data["revokeApiKey"]
    assert payload["userErrors"] == []
    revoked = payload["apiKey"]
    assert revoked["id"] == seeded.charger.id
    assert revoked["name"] == "charger-app"
    assert revoked["hint"] == seeded.charger.hint
    assert revoked["status"] == "REVOKED"
    assert abs(_at(revoked["revokedAt"]) - utcnow()) < timedelta(minutes=5)

    # The very next use of the key is refused, and revoking again changes nothing.
    refused = await _verify(client, seeded.charger.secret)
    assert (refused["valid"], refused["code"]) == (False, "REVOKED")
    again = await run(client, "RevokeApiKey", {"id": seeded.charger.id}, key=seeded.acme.admin_key)
    assert again.data["revokeApiKey"]["apiKey"]["revokedAt"] == revoked["revokedAt"]

    overview = await run(client, "OrganizationOverview", key=seeded.acme.admin_key)
    assert overview.data["organization"]["keyCounts"]["revoked"] == 2


@executes("RevokeApiKey")
async def test_revoke_api_key_of_another_organization_is_not_found(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    result = await run(
        client, "RevokeApiKey", {"id": seeded.globex_key.id}, key=seeded.acme.admin_key
    )

    payload = result.data["revokeApiKey"]
    assert payload["apiKey"] is None
    assert [e["code"] for e in payload["userErrors"]] == ["NOT_FOUND"]
    assert (await _verify(client, seeded.globex_key.secret))["valid"] is True


# --- The key-settings page: policy, rotation, audit log --------------------------------------

POLICY = {
    "singleActiveKey": True,
    "supersedeGraceHours": 24,
    "maxExpiresInDays": 90,
    "requireExpiry": True,
    "leakedKeyAction": "REVOKE",
}


@executes("KeyPolicy")
async def test_key_policy_shows_the_organizations_own_policy(
    client: httpx.AsyncClient, runtime: Runtime, seeded: Seeded
) -> None:
    operator = Caller(seeded.acme.organization_id, runtime.catalogue.names())
    async with session_scope(runtime.sessionmaker) as session:
        updated = await update_key_policy(
            session,
            operator,
            PolicyUpdate(
                single_active_key=True,
                supersede_grace_hours=24,
                max_expires_in_days=90,
                require_expiry=True,
            ),
        )
    assert isinstance(updated, PolicyUpdated)

    result = await run(client, "KeyPolicy", key=seeded.acme.admin_key)
    assert result.data == {
        "organization": {
            "id": seeded.acme.organization_id,
            "keyPolicy": POLICY,
            "keyCounts": {"active": 3},
        }
    }

    globex = await run(client, "KeyPolicy", key=seeded.globex.admin_key)
    assert globex.data["organization"]["keyPolicy"] == {
        "singleActiveKey": False,
        "supersedeGraceHours": 0,
        "maxExpiresInDays": None,
        "requireExpiry": False,
        "leakedKeyAction": "REVOKE",
    }


@executes("UpdateKeyPolicy", "KeyPolicy")
async def test_update_key_policy_saves_the_settings_form(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    result = await run(
        client,
        "UpdateKeyPolicy",
        {"input": {"singleActiveKey": True, "supersedeGraceHours": 48, "maxExpiresInDays": 365}},
        key=seeded.acme.admin_key,
    )

    payload = result.data["updateKeyPolicy"]
    assert payload["userErrors"] == []
    assert payload["organization"] == {
        "id": seeded.acme.organization_id,
        "keyPolicy": {
            "singleActiveKey": True,
            "supersedeGraceHours": 48,
            "maxExpiresInDays": 365,
            "requireExpiry": False,
            "leakedKeyAction": "REVOKE",
        },
    }
    # The next key will supersede the charger and billing keys, not the admin key saving this.
    assert payload["keysToSupersede"] == 2
    # Turning the policy on supersedes nothing by itself.
    assert (await _verify(client, seeded.charger.secret))["valid"] is True

    # null removes the lifetime bound; fields left out keep their value.
    cleared = await run(
        client, "UpdateKeyPolicy", {"input": {"maxExpiresInDays": None}}, key=seeded.acme.admin_key
    )
    policy = cleared.data["updateKeyPolicy"]["organization"]["keyPolicy"]
    assert policy == {
        "singleActiveKey": True,
        "supersedeGraceHours": 48,
        "maxExpiresInDays": None,
        "requireExpiry": False,
        "leakedKeyAction": "REVOKE",
    }
    shown = await run(client, "KeyPolicy", key=seeded.acme.admin_key)
    assert shown.data["organization"]["keyPolicy"] == policy


@executes("UpdateKeyPolicy")
async def test_update_key_policy_reports_an_out_of_range_value(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    result = await run(
        client,
        "UpdateKeyPolicy",
        {"input": {"supersedeGraceHours": 721}},
        key=seeded.acme.admin_key,
    )

    payload = result.data["updateKeyPolicy"]
    assert payload["organization"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [
        ("INVALID_INPUT", "supersedeGraceHours")
    ]


@executes("RotateApiKey")
async def test_rotate_api_key_issues_a_new_secret_and_keeps_the_old_for_the_grace_period(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    variables = {"input": {"id": seeded.charger.id, "gracePeriodHours": 24}}
    result = await run(client, "RotateApiKey", variables, key=seeded.acme.admin_key)

    payload = result.data["rotateApiKey"]
    assert payload["userErrors"] == []
    new = payload["apiKey"]
    secret = payload["secret"]
    assert isinstance(secret, str)
    assert secret != seeded.charger.secret
    assert new["id"] != seeded.charger.id
    assert new["name"] == "charger-app"
    assert new["scopes"] == ["read:charge_points"]
    assert new["status"] == "ACTIVE"
    assert new["hint"] != seeded.charger.hint
    assert new["rateLimit"]["isDefault"] is True

    previous = payload["previousApiKey"]
    assert previous["id"] == seeded.charger.id
    assert previous["hint"] == seeded.charger.hint
    assert previous["status"] == "ACTIVE"
    assert previous["deprecated"] is True
    assert previous["supersededBy"] == {"id": new["id"], "hint": new["hint"]}
    sunset = _at(previous["supersededAt"]) - utcnow()
    assert timedelta(hours=23) < sunset <= timedelta(hours=24)
    # The dashboard sees that the old key is still in use.
    assert previous["lastUsedAt"] is not None

    # Both secrets work during the grace period; the old one says it is deprecated.
    old = await _verify(client, seeded.charger.secret)
    assert (old["valid"], old["deprecated"]) == (True, True)
    assert old["replacedBy"] == {"name": "charger-app", "hint": new["hint"]}
    fresh = await _verify(client, secret)
    assert (fresh["valid"], fresh["keyId"], fresh["deprecated"]) == (True, new["id"], False)


@executes("RotateApiKey")
async def test_rotate_api_key_of_a_revoked_key_is_a_user_error(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    variables = {"input": {"id": seeded.retired.id}}
    result = await run(client, "RotateApiKey", variables, key=seeded.acme.admin_key)

    payload = result.data["rotateApiKey"]
    assert payload["apiKey"] is None
    assert payload["secret"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("INVALID_INPUT", "id")]
    assert "revoked" in payload["userErrors"][0]["message"]


@executes("AuditLog", "CreateApiKey", "RotateApiKey", "UpdateKeyPolicy", "RevokeApiKey")
async def test_audit_log_shows_what_the_dashboard_did_newest_first(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    admin = seeded.acme.admin_key
    created = await run(
        client,
        "CreateApiKey",
        {"input": {"name": "webhooks", "scopes": ["write:webhooks"]}},
        key=admin,
    )
    created_id = created.data["createApiKey"]["apiKey"]["id"]
    new_secret = created.data["createApiKey"]["secret"]
    rotated = await run(
        client,
        "RotateApiKey",
        {"input": {"id": seeded.billing.id, "gracePeriodHours": 1}},
        key=admin,
    )
    rotated_payload = rotated.data["rotateApiKey"]
    await run(client, "UpdateKeyPolicy", {"input": {"requireExpiry": True}}, key=admin)
    await run(client, "RevokeApiKey", {"id": created_id}, key=admin)

    result = await run(client, "AuditLog", {"first": 4}, key=admin)
    log = result.data["auditLog"]
    # The seed: the admin key's and four keys' creation, one revocation; then the four above.
    assert log["totalCount"] == 10
    assert log["pageInfo"]["hasNextPage"] is True
    events = [edge["node"] for edge in log["edges"]]
    assert [event["action"] for event in events] == [
        "KEY_REVOKED",
        "POLICY_UPDATED",
        "KEY_ROTATED",
        "KEY_CREATED",
    ]
    occurred = [_at(event["occurredAt"]) for event in events]
    assert occurred == sorted(occurred, reverse=True)
    admin_hint = events[0]["actor"]["hint"]
    for event in events:
        assert event["actor"] == {"id": seeded.acme.admin_key_id, "hint": admin_hint}
    assert admin_hint is not None
    assert admin_hint.startswith("kh_")

    revoked, policy, rotation, creation = events
    assert revoked["apiKey"] == {
        "id": created_id,
        "name": "webhooks",
        "hint": creation["apiKey"]["hint"],
        "status": "REVOKED",
    }
    assert policy["apiKey"] is None
    assert policy["details"] == {
        "before": {"requireExpiry": False},
        "after": {"requireExpiry": True},
    }
    assert rotation["apiKey"]["id"] == seeded.billing.id
    assert rotation["details"]["newKeyId"] == rotated_payload["apiKey"]["id"]
    assert rotation["details"]["newHint"] == rotated_payload["apiKey"]["hint"]
    assert rotation["details"]["previousHint"] == seeded.billing.hint
    assert rotation["details"]["gracePeriodHours"] == 1
    assert creation["details"]["name"] == "webhooks"
    assert creation["details"]["scopes"] == ["write:webhooks"]

    # The next page goes on where this one stopped: the seed, made from the console (no actor).
    rest = await run(
        client, "AuditLog", {"first": 20, "after": log["pageInfo"]["endCursor"]}, key=admin
    )
    older = [edge["node"] for edge in rest.data["auditLog"]["edges"]]
    assert [event["action"] for event in older] == ["KEY_REVOKED", *["KEY_CREATED"] * 5]
    assert older[0]["apiKey"]["id"] == seeded.retired.id
    assert all(event["actor"] == {"id": None, "hint": None} for event in older)
    assert rest.data["auditLog"]["pageInfo"]["hasNextPage"] is False

    # Filtered to one action; no secret anywhere, and nothing of Globex.
    only = await run(client, "AuditLog", {"filter": {"action": "KEY_ROTATED"}}, key=admin)
    assert only.data["auditLog"]["totalCount"] == 1
    assert only.data["auditLog"]["edges"][0]["node"]["id"] == rotation["id"]
    for response in (result, rest, only):
        text = response.response.text
        assert seeded.globex_key.id not in text
        for secret in [*seeded.secrets, new_secret, rotated_payload["secret"]]:
            assert secret not in text
