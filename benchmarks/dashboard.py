"""What the dashboard costs a browser: the bytes each page transfers on its first load, and the
time from navigation to the keys table showing 100 keys beside the same GraphQL request alone.

    .venv/bin/python benchmarks/dashboard.py

One keyhouse server (one uvicorn worker, SQLite) with an organization of 100 keys, and headless
Debian Chromium (``/usr/bin/chromium``) through Playwright. Bytes are what went over the wire
(compressed bodies and headers), with an empty cache, GraphiQL excluded (its own row, for
reference). Times are medians of ``--runs`` fresh loads. Target: each page under 300 KB.
Prints a table and writes benchmarks/results/dashboard.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from common import (
    keyhouse_env,
    keyhouse_init,
    keyhouse_server,
    print_table,
    write_results,
)

CHROMIUM = "/usr/bin/chromium"
KEYS = 100
TARGET_BYTES = 300 * 1024
PAGES = ["overview", "keys", "usage", "policy", "webhooks", "audit-log"]
QUERIES = Path(__file__).resolve().parents[1] / "app" / "dashboard" / "queries"
CREATE = (QUERIES / "CreateApiKey.graphql").read_text()
KEYS_PAGE = (QUERIES / "KeysPage.graphql").read_text()
# The same request the keys page sends, timed in the page with nothing else around it.
REQUEST_ALONE = """async ([query, key]) => {
  const started = performance.now();
  const answer = await fetch("/graphql", {method: "POST", headers: {"Content-Type":
    "application/json", "X-API-Key": key}, body: JSON.stringify({query, operationName:
    "KeysPage", variables: {first: 100, filter: {status: "ALL", scope: null}}})});
  const body = await answer.json();
  if (body.data.apiKeys.edges.length !== 100) throw new Error("not 100 keys");
  return performance.now() - started;
}"""


def create_keys(url: str, key: str) -> None:
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, trust_env=False) as client:
        for number in range(KEYS - 1):  # the admin key is the hundredth
            variables = {"input": {"name": f"key-{number}", "scopes": ["read:billing"]}}
            answer = client.post("/graphql", json={"query": CREATE, "variables": variables})
            assert answer.json()["data"]["createApiKey"]["secret"], answer.text


def transferred(browser: Any, url: str, key: str, path: str) -> int:
    """Bytes over the wire for a first load of ``path`` with an empty cache."""
    context = browser.new_context()
    context.add_init_script(f"sessionStorage.setItem('keyhouse.apiKey', {key!r})")
    page = context.new_page()
    responses: list[Any] = []
    page.on("requestfinished", lambda request: responses.append(request))
    page.goto(f"{url}{path}", wait_until="networkidle")
    total = 0
    for request in responses:
        sizes = request.sizes()
        total += sizes["responseBodySize"] + sizes["responseHeadersSize"]
    context.close()
    return total


def keys_table_ms(browser: Any, url: str, key: str) -> tuple[float, float]:
    """Navigation start to 100 rows drawn, and the keys request alone, in one fresh page."""
    context = browser.new_context()
    context.add_init_script(f"sessionStorage.setItem('keyhouse.apiKey', {key!r})")
    page = context.new_page()
    page.goto(f"{url}/dashboard/keys?first={KEYS}")
    page.wait_for_function(
        f"() => document.querySelectorAll('table.keys tbody tr').length >= {KEYS}"
    )
    shown: float = page.evaluate("performance.now()")
    alone: float = page.evaluate(REQUEST_ALONE, [KEYS_PAGE, key])
    context.close()
    return shown, alone


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as directory:
        env = keyhouse_env(Path(directory) / "keyhouse.db")
        tenant = keyhouse_init(env)
        with keyhouse_server(env, log_dir=Path(directory)) as server, sync_playwright() as p:
            url = server.url("").rstrip("/")
            create_keys(url, tenant.api_key)
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            sizes = {page: transferred(browser, url, tenant.api_key, f"/dashboard/{page}")
                     for page in PAGES}  # fmt: skip
            graphiql = transferred(browser, url, tenant.api_key, "/graphql")
            timings = [keys_table_ms(browser, url, tenant.api_key) for _ in range(runs)]
            browser.close()
    shown = statistics.median(t[0] for t in timings)
    alone = statistics.median(t[1] for t in timings)
    rows = [[f"/dashboard/{page}", f"{size / 1024:.1f} KB"] for page, size in sizes.items()]
    rows.append(["/graphql (GraphiQL, not in the target)", f"{graphiql / 1024:.1f} KB"])
    print_table(["first load", "transferred"], rows)
    print(f"\nkeys table with {KEYS} keys: {shown:.0f} ms from navigation; "
          f"the same GraphQL request alone: {alone:.1f} ms (medians of {runs})")  # fmt: skip
    within = all(size < TARGET_BYTES for size in sizes.values())
    print(f"target: every dashboard page under 300 KB: {'met' if within else 'MISSED'}")
    results = {"bytes": sizes, "graphiqlBytes": graphiql, "keysTableMs": shown,
               "keysRequestAloneMs": alone, "runs": runs}  # fmt: skip
    write_results("dashboard", results)
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
