"""The dashboard and GraphiQL in headless Chromium against a real ``keyhouse serve``, with every
request to another host aborted."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.dashboard.browser import (
    CHROMIUM,
    HookReceiver,
    Server,
    Tab,
    browser_tab,
    require_chromium,
    running_server,
)
from tests.processes import keyhouse_json

pytestmark = pytest.mark.slow

PAGES = ["Overview", "Keys", "Usage", "Policy", "Webhooks", "Audit log"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_chromium()  # skip (or fail) before starting anything
    with running_server(tmp_path_factory.mktemp("dashboard")) as running:
        yield running


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def tab(browser: Any, server: Server, tmp_path: Path) -> Iterator[Tab]:
    with browser_tab(browser, server, tmp_path) as opened:
        yield opened
        # Everything the page needed came from keyhouse, and ran under its policy.
        assert opened.foreign_requests == []
        assert opened.console_errors == []


def test_a_refused_key_shows_the_servers_reason(tab: Tab, server: Server) -> None:
    tab.page.goto(f"{server.url}/dashboard")
    tab.page.get_by_label("API key").fill(f'"{server.admin_key}"')
    tab.page.get_by_role("button", name="Sign in").click()

    alert = tab.page.get_by_role("alert")
    alert.wait_for()
    assert "QUOTED" in alert.inner_text()
    tab.screenshot("sign-in-refused")


def test_a_key_created_in_the_dashboard_works_with_its_scopes_until_revoked(
    tab: Tab, server: Server
) -> None:
    page = tab.page
    tab.sign_in(server.admin_key)
    tab.go("Keys")
    page.get_by_role("button", name="Create key").click()
    page.get_by_label("Name", exact=True).fill("billing-sync")
    page.get_by_label("read:billing").check()
    page.get_by_label("read:charge_points").check()
    page.get_by_role("button", name="Create", exact=True).click()
    secret = page.get_by_label("Secret", exact=True).input_value()
    tab.screenshot("key-created")
    page.get_by_role("button", name="Copy").click()
    page.get_by_role("button", name="Done").click()

    verified = server.verify(secret, "read:billing", "read:charge_points")
    assert verified["valid"] is True
    assert sorted(verified["scopes"]) == ["read:billing", "read:charge_points"]
    assert server.verify(secret, "write:billing")["code"] == "INSUFFICIENT_SCOPE"

    page.get_by_role("button", name="Revoke billing-sync").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    row = page.get_by_role("row").filter(has_text="billing-sync")
    row.get_by_text("REVOKED").wait_for()
    assert server.verify(secret, "read:billing")["code"] == "REVOKED"
    tab.screenshot("key-revoked")


def test_rotating_shows_the_new_secret_once(tab: Tab, server: Server) -> None:
    server.create_key("to-rotate", "read:sessions")
    tab.sign_in(server.admin_key)
    tab.go("Keys")

    tab.page.get_by_role("button", name="Rotate to-rotate").click()
    tab.page.get_by_label("Grace period").fill("0")
    tab.page.get_by_role("button", name="Rotate", exact=True).click()
    secret = tab.page.get_by_label("Secret", exact=True).input_value()

    verified = server.verify(secret, "read:sessions")
    assert verified["valid"] is True, verified


def test_the_usage_chart_draws_the_uses_just_made(tab: Tab, server: Server) -> None:
    made = server.create_key("metered", "read:billing")
    for _ in range(3):
        server.verify(made["apiKey"], "read:billing")
    time.sleep(0.5)  # the flush interval is 0.2 s
    tab.sign_in(server.admin_key)

    tab.page.goto(f"{server.url}/dashboard/usage?key={made['id']}")

    tab.page.locator(".uplot canvas").wait_for()
    totals = tab.page.locator(".counts").inner_text()
    assert re.search(r"\b3\s+valid", totals), totals
    tab.screenshot("usage")

    # The organization's tables: the key just used among the top keys, its operation among the
    # top operations; the key's row leads to its own usage.
    tab.page.get_by_role("link", name="All keys").click()
    keys = tab.page.get_by_role("table", name="The most used keys")
    keys.get_by_role("row").filter(has_text="metered").wait_for()
    assert re.search(r"metered.*\b3\s+3\s+0\b", keys.inner_text(), re.S), keys.inner_text()
    tab.screenshot("usage-tables")
    operations = tab.page.get_by_role("table", name="The most used operations")
    assert "verify" in operations.inner_text()
    assert "VALID" in tab.page.get_by_role("table", name="Requests by outcome").inner_text()
    keys.get_by_role("link", name="metered").click()
    tab.page.get_by_text("One key's usage.").wait_for()


def test_a_missing_scope_is_named(tab: Tab, server: Server) -> None:
    reader = server.create_key("reader", "read:api_keys")
    tab.sign_in(reader["apiKey"])

    tab.go("Usage")

    assert "read:analytics" in tab.page.get_by_role("alert").inner_text()


def test_a_key_revoked_while_signed_in_returns_to_sign_in_with_the_reason(
    tab: Tab, server: Server
) -> None:
    doomed = server.create_key("doomed", "read:api_keys")
    tab.sign_in(doomed["apiKey"])
    tab.go("Keys")
    tab.page.get_by_role("row").filter(has_text="doomed").wait_for()
    # Revoked from elsewhere (the admin's dashboard in another tab).
    server.graphql("RevokeApiKey", {"id": doomed["id"]})

    tab.go("Overview")

    tab.page.get_by_label("API key").wait_for()
    assert "REVOKED" in tab.page.get_by_role("alert").inner_text()


def test_graphiql_runs_a_query_with_the_dashboards_key_and_shows_the_docs(
    tab: Tab, server: Server
) -> None:
    tab.sign_in(server.admin_key)
    tab.page.get_by_role("link", name="GraphiQL").click()
    tab.page.locator(".graphiql-container").wait_for()

    tab.page.get_by_role("button", name=re.compile("Execute query")).click()
    tab.page.locator(".result-window").get_by_text('"Acme"').wait_for()
    tab.page.get_by_role("button", name=re.compile("Show Documentation Explorer")).click()
    tab.page.locator(".graphiql-doc-explorer").get_by_text("Query").first.wait_for()

    tab.screenshot("graphiql")
    # keyhouse's page names GraphiQL's editors, lets the keyboard reach their scroll areas and
    # darkens the light theme's faint colours: nothing serious is left, in either theme.
    assert tab.page.get_by_role("textbox", name="Query editor").count() == 1
    assert tab.page.get_by_role("textbox", name="Headers").count() == 1
    assert tab.serious_accessibility_violations() == []
    tab.page.emulate_media(color_scheme="dark")
    assert tab.serious_accessibility_violations() == []


def test_an_endpoint_added_in_the_dashboard_receives_signed_events_and_shows_its_deliveries(
    tab: Tab, server: Server
) -> None:
    receiver = HookReceiver()
    try:
        page = tab.page
        tab.sign_in(server.admin_key)
        tab.go("Webhooks")
        page.get_by_role("button", name="Add endpoint").click()
        page.get_by_label("URL").fill(receiver.url)
        page.get_by_label("Description").fill("billing alerts")
        page.get_by_role("checkbox", name=re.compile(r"^key\.created ")).check()
        page.get_by_role("button", name="Add", exact=True).click()
        secret = page.get_by_label("Signing secret").input_value()
        page.get_by_role("button", name="Done").click()

        made = server.create_key("hooked", "read:billing")
        headers, body = receiver.next()
        event = Webhook(secret).verify(body, headers)
        assert (event["type"], event["data"]["key"]["id"]) == ("key.created", made["id"])

        page.get_by_role("link", name="Deliveries to billing alerts").click()
        page.get_by_role("heading", level=1, name="Webhooks").wait_for()
        row = page.get_by_role("row").filter(has_text="key.created")
        row.get_by_text("SUCCEEDED").wait_for()
        assert headers["webhook-id"] in row.inner_text()
        tab.screenshot("webhook-deliveries")
        assert tab.serious_accessibility_violations() == []

        page.get_by_role("link", name="All endpoints").click()
        page.get_by_role("button", name="Delete billing alerts").wait_for()
        tab.screenshot("webhooks-endpoints")
        assert tab.serious_accessibility_violations() == []
        page.get_by_role("button", name="Delete billing alerts").click()
        page.get_by_role("dialog").get_by_role("button", name="Delete").click()
        page.get_by_text("No endpoints yet.").wait_for()
    finally:
        receiver.close()


def test_the_keys_and_the_audit_log_page_forward_and_back(tab: Tab, server: Server) -> None:
    # More events than the audit log's page of 20.
    for number in range(21):
        created = {"name": f"paged-{number}", "scopes": ["read:billing"]}
        server.graphql("CreateApiKey", {"input": created})
    tab.sign_in(server.admin_key)

    def names(table: str) -> list[str]:
        rows = tab.page.get_by_role("table", name=table).locator("tbody tr")
        rows.first.wait_for()
        # Without the relative times, which move on while the test runs.
        return [re.sub(r"\d+ seconds? ago|now", "", row.inner_text()) for row in rows.all()]

    def turned(table: str, button: str, shown: list[str]) -> list[str]:
        tab.page.get_by_role("button", name=button).click()
        before = shown
        for _ in range(100):  # until the other page is drawn, and stays as drawn
            tab.page.wait_for_timeout(100)
            now = names(table)
            if now != shown and now == before:
                return now
            before = now
        raise AssertionError(f"{button} did not change the {table} table")

    for address, table in (("keys?first=2", "API keys"), ("audit-log", "Audit log")):
        tab.page.goto(f"{server.url}/dashboard/{address}")
        first = names(table)
        second = turned(table, "Next page", first)
        assert not set(first) & set(second)
        assert turned(table, "Previous page", second) == first
        assert tab.page.get_by_role("button", name="Previous page").is_disabled()


@pytest.mark.parametrize("name", PAGES)
def test_no_serious_accessibility_violation(tab: Tab, server: Server, name: str) -> None:
    tab.sign_in(server.admin_key)

    tab.go(name)
    tab.page.wait_for_load_state("networkidle")

    tab.screenshot(name.lower().replace(" ", "-"))
    assert tab.serious_accessibility_violations() == []


def test_the_sign_in_page_has_no_serious_accessibility_violation(tab: Tab, server: Server) -> None:
    tab.page.goto(f"{server.url}/dashboard")
    tab.page.get_by_label("API key").wait_for()

    assert tab.serious_accessibility_violations() == []


def test_a_sign_in_link_opens_the_dashboard_without_a_key(tab: Tab, server: Server) -> None:
    operator = keyhouse_json(server.env, "operator-keys", "create", "--name", "support")
    made = httpx.post(
        f"{server.url}/graphql",
        json={
            "query": "mutation($id: ID!) { createDashboardLink(input: {organizationId: $id}) "
            "{ url } }",
            "variables": {"id": server.organization_id},
        },
        headers={"X-API-Key": operator["operatorKey"]},
        timeout=10,
        trust_env=False,
    )
    url = made.json()["data"]["createDashboardLink"]["url"]

    tab.page.goto(url)
    tab.page.get_by_role("button", name="Sign out").wait_for()

    assert tab.page.url == f"{server.url}/dashboard/overview"
    tab.page.get_by_role("heading", name="Acme").wait_for()
    assert "khl_" not in tab.page.evaluate("() => history.length + location.href")
