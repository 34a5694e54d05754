"""A real ``keyhouse serve`` and headless Chromium (Debian's, never a downloaded one) for the
dashboard's browser tests, with every request to another host aborted: the pages must work
offline."""

from __future__ import annotations

import os
import queue
import re
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.dashboard.assets import QUERIES
from tests.conftest import REQUIRE_SERVICES
from tests.processes import (
    ROOT,
    environment_without_settings,
    free_port,
    healthy,
    keyhouse_command,
    keyhouse_json,
    started,
    wait_until,
)

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core-4.14.1" / "axe.min.js"


def require_chromium() -> None:
    if os.access(CHROMIUM, os.X_OK):
        return
    reason = f"Chromium is not installed at {CHROMIUM} (Debian package: chromium)"
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (KEYHOUSE_TEST_REQUIRE_SERVICES=1: this must not be skipped)")
    pytest.skip(reason)


@dataclass
class Server:
    url: str
    env: dict[str, str]
    organization_id: str
    admin_key: str

    def create_key(self, name: str, *scopes: str) -> dict[str, str]:
        options = [item for scope in scopes for item in ("--scope", scope)]
        return keyhouse_json(
            self.env, "keys", "create", "--organization", self.organization_id,
            "--name", name, *options,
        )  # fmt: skip

    def graphql(self, operation: str, variables: dict[str, Any]) -> dict[str, Any]:
        """One of the dashboard's operations, sent with the admin key."""
        answer = httpx.post(
            f"{self.url}/graphql",
            json={"query": (QUERIES / f"{operation}.graphql").read_text(), "variables": variables},
            headers={"X-API-Key": self.admin_key},
            timeout=10,
            trust_env=False,
        )
        body: dict[str, Any] = answer.json()
        assert "errors" not in body, body
        return body

    def verify(self, key: str, *scopes: str) -> dict[str, Any]:
        answer = httpx.post(
            f"{self.url}/v1/keys/verify",
            json={"key": key, "scopes": list(scopes)},
            timeout=10,
            trust_env=False,
        )
        body: dict[str, Any] = answer.json()
        return body


@contextmanager
def running_server(directory: Path) -> Iterator[Server]:
    env = environment_without_settings()
    env.update(
        KEYHOUSE_DATABASE_URL=f"sqlite+aiosqlite:///{directory / 'keyhouse.db'}",
        KEYHOUSE_LOG_LEVEL="WARNING",
        # Uses reach the usage chart soon after they happen.
        KEYHOUSE_USAGE_FLUSH_INTERVAL_SECONDS="0.2",
        # Webhooks in plain http to the test's receiver on loopback, and no other address.
        KEYHOUSE_WEBHOOK_ALLOW_HTTP_HOSTS="127.0.0.1",
    )
    initial = keyhouse_json(env, "init", "--organization", "Acme")
    port = free_port()
    log = directory / "keyhouse.log"
    command = [*keyhouse_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with started(command, log, env=env, cwd=ROOT) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthy(url), process, "keyhouse serve", log)
        yield Server(url, env, initial["organizationId"], initial["apiKey"])


class HookReceiver:
    """A webhook receiver on loopback, in a thread: keeps each request's headers and body."""

    def __init__(self) -> None:
        received = self.received = queue.Queue[tuple[dict[str, str], bytes]]()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.put(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def next(self, timeout: float = 10) -> tuple[dict[str, str], bytes]:
        return self.received.get(timeout=timeout)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Tab:
    """A browser page on keyhouse, with what went wrong in it: console errors (a refused
    Content-Security-Policy among them) and requests to other hosts."""

    page: Any
    server: Server
    screenshots: Path
    console_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> Path:
        path = self.screenshots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def sign_in(self, key: str) -> None:
        self.page.goto(f"{self.server.url}/dashboard/overview")
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.get_by_role("button", name="Sign out").wait_for()

    def go(self, link: str) -> None:
        self.page.get_by_role("navigation").get_by_role("link", name=link, exact=True).click()
        self.page.get_by_role("heading", level=1, name=link).wait_for()

    def serious_accessibility_violations(self) -> list[str]:
        violations = self._axe_violations()
        return [
            f"{v['id']} ({v['impact']}): {[node['target'] for node in v['nodes']]}"
            for v in violations
            if v["impact"] in ("serious", "critical")
        ]

    def _axe_violations(self) -> list[dict[str, Any]]:
        # axe-core 4.14 throws (reading 'nthChild' of undefined) when the page replaces a node
        # while it runs, as GraphiQL's editors do: a crash is run again, never read as a pass.
        for _ in range(2):
            try:
                return self._run_axe()
            except Exception as error:
                if "nthChild" not in str(error):
                    raise
                self.page.wait_for_timeout(500)
        return self._run_axe()

    def _run_axe(self) -> list[dict[str, Any]]:
        violations: list[dict[str, Any]] = self.page.evaluate(
            "async () => (await axe.run(document)).violations"
        )
        return violations


def _console_error(tab: Tab, message: Any) -> None:
    # The 401 of a refused key is expected: the page shows its reason.
    if message.type == "error" and not re.search(r"status of 401", message.text):
        tab.console_errors.append(message.text)


@contextmanager
def browser_tab(browser: Any, server: Server, screenshots: Path) -> Iterator[Tab]:
    with ExitStack() as stack:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        stack.callback(context.close)
        # The engine runs in every page from the start; an init script is not bound by the
        # page's Content-Security-Policy, which stays in force for everything else.
        context.add_init_script(path=str(AXE))
        page = context.new_page()
        tab = Tab(page, server, screenshots)

        def only_keyhouse(route: Any) -> None:
            if route.request.url.startswith(server.url):
                route.continue_()
            else:
                tab.foreign_requests.append(route.request.url)
                route.abort()

        page.route("**/*", only_keyhouse)
        page.on("console", lambda message: _console_error(tab, message))
        page.on("pageerror", lambda error: tab.console_errors.append(str(error)))
        page.set_default_timeout(10_000)
        yield tab
