"""What the dashboard's tests check on every page and asset."""

from __future__ import annotations

import re

import httpx

STRICT_POLICY = ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'")


def assert_strict_policy(response: httpx.Response) -> None:
    policy = response.headers["content-security-policy"]
    for directive in STRICT_POLICY:
        assert directive in policy.split("; "), (directive, policy)
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy


def local_references(html: str) -> list[str]:
    """The addresses of the scripts and stylesheets a page loads: absolute paths on keyhouse
    (the empty ``data:,`` icon aside, which keeps browsers from asking for /favicon.ico)."""
    found = [
        reference
        for reference in re.findall(r'(?:src|href)="([^"]+)"', html)
        if reference != "data:,"
    ]
    assert all(reference.startswith("/") for reference in found), found
    return found
