"""The guard against server-side request forgery: https only (plain http to listed hosts), no
private, loopback or link-local address unless listed; a name checked again after resolution at
every delivery. Names resolve through a stub: no test here resolves or connects to anything."""

from __future__ import annotations

import pytest

from app.webhooks.destinations import (
    RefusedDestination,
    allowed_http_hosts,
    check_url,
    destination,
)

LISTED = allowed_http_hosts("127.0.0.1, [::2]")


def stub(*addresses: str):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


async def never(host: str, port: int) -> list[str]:
    raise AssertionError("an address literal is never resolved")


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/keyhouse",
        "https://hooks.example.com:8443/k?x=1",
        "https://93.184.215.14/hooks",
        "http://127.0.0.1:9000/hooks",  # listed
        "http://[::2]/hooks",  # listed, written with brackets in the setting
    ],
)
def test_accepted_urls(url: str) -> None:
    assert check_url(url, LISTED) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/", "https://"),
        ("ftp://hooks.example.com/", "https://"),
        ("https:///nohost", "https://"),
        ("hooks.example.com/path", "https://"),
        ("https://127.0.0.2/", "private, loopback"),
        ("https://[::1]/", "private, loopback"),
        ("https://[::ffff:127.0.0.1]/", "private, loopback"),
        ("https://10.1.2.3/", "private, loopback"),
        ("https://192.168.0.10/", "private, loopback"),
        ("https://172.16.5.4/", "private, loopback"),
        ("https://169.254.169.254/latest/meta-data", "private, loopback"),
        ("https://[fe80::1]/", "private, loopback"),
        ("https://0.0.0.0/", "private, loopback"),
        ("https://100.64.0.1/", "private, loopback"),
        ("https://224.0.0.1/", "private, loopback"),
        ("https://user:pass@hooks.example.com/", "user name or password"),
        ("https://hooks.example.com/#x", "fragment"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("https://" + "a" * 2050 + ".com/", "at most 2048"),
    ],
)
def test_refused_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(RefusedDestination, match=why):
        check_url(url, LISTED)


def test_plain_http_to_a_listed_host_only() -> None:
    with pytest.raises(RefusedDestination, match="KEYHOUSE_WEBHOOK_ALLOW_HTTP_HOSTS"):
        check_url("http://127.0.0.2/hooks", LISTED)


async def test_a_name_resolving_to_a_private_address_is_refused_at_delivery() -> None:
    for address in ("10.0.0.7", "127.0.0.2", "::1", "169.254.169.254"):
        with pytest.raises(RefusedDestination, match="resolves to a private"):
            await destination("https://hooks.example.com/", LISTED, stub(address))


async def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    with pytest.raises(RefusedDestination):
        await destination("https://hooks.example.com/", LISTED, stub("93.184.215.14", "10.0.0.1"))


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(RefusedDestination, match="does not resolve"):
        await destination("https://nowhere.example/", LISTED, stub())


async def test_the_attempt_connects_to_the_checked_address_with_the_name_for_host_and_tls() -> None:
    target = await destination(
        "https://hooks.example.com:8443/k?x=1", LISTED, stub("93.184.215.14")
    )
    assert target.url == "https://93.184.215.14:8443/k?x=1"
    assert target.host_header == "hooks.example.com:8443"
    assert target.server_name == "hooks.example.com"


async def test_an_address_literal_is_checked_without_resolving() -> None:
    target = await destination("https://[2606:4700::1111]/h", LISTED, never)
    assert target.url == "https://[2606:4700::1111]/h"
    with pytest.raises(RefusedDestination):
        await destination("https://127.0.0.2/h", LISTED, never)
    listed = await destination("http://127.0.0.1:8000/h", LISTED, never)
    assert listed.url == "http://127.0.0.1:8000/h"
