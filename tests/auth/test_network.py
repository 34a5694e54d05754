"""Where a request comes from: only a trusted proxy may say, and then the right-most address it
did not itself add is the caller."""

from __future__ import annotations

import ipaddress

import pytest

from app.auth.network import NetworkProblem, client_address, parse_address, parse_network
from app.config import Settings
from app.serving import forwarding

GATEWAY = [ipaddress.ip_network("10.0.0.0/8")]


def test_an_untrusted_peer_is_the_caller_whatever_its_headers_say() -> None:
    headers = {"x-forwarded-for": "203.0.113.7", "x-real-ip": "203.0.113.8"}

    assert client_address("198.51.100.1", headers, GATEWAY) == parse_address("198.51.100.1")
    assert client_address("198.51.100.1", headers, []) == parse_address("198.51.100.1")


def test_from_a_trusted_proxy_the_right_most_untrusted_forwarded_address_is_the_caller() -> None:
    # The client forged the first entry; the gateway appended what it saw, then a second proxy.
    headers = {"x-forwarded-for": "192.0.2.66, 203.0.113.7, 10.1.2.3"}

    assert client_address("10.0.0.1", headers, GATEWAY) == parse_address("203.0.113.7")


def test_from_a_trusted_proxy_without_forwarded_for_x_real_ip_is_the_caller() -> None:
    assert client_address("10.0.0.1", {"x-real-ip": "203.0.113.7"}, GATEWAY) == parse_address(
        "203.0.113.7"
    )
    assert client_address("10.0.0.1", {}, GATEWAY) == parse_address("10.0.0.1")


def test_a_forwarded_hop_that_is_not_an_address_makes_the_caller_unknown() -> None:
    headers = {"x-forwarded-for": "unknown, 10.0.0.9"}

    assert client_address("10.0.0.1", headers, GATEWAY) is None


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("203.0.113.7:4431", "203.0.113.7"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
    ],
)
def test_addresses_are_read_in_their_usual_spellings(text: str, address: str) -> None:
    assert parse_address(text) == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("10.0.0.0/33", "not an IPv4 or IPv6"),
        ("10.0.0.1/24", "host bits set; the block is 10.0.0.0/24"),
        ("example.com", "not an IPv4 or IPv6"),
        ("", "not an IPv4 or IPv6"),
    ],
)
def test_an_allowlist_entry_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(NetworkProblem, match=problem):
        parse_network(text)


def test_uvicorn_trusts_exactly_the_configured_proxies() -> None:
    assert forwarding(Settings(trusted_proxies="")) == {
        "proxy_headers": False,
        "forwarded_allow_ips": [],
    }
    assert forwarding(Settings(trusted_proxies="127.0.0.1, 10.0.0.0/8")) == {
        "proxy_headers": True,
        "forwarded_allow_ips": ["127.0.0.1/32", "10.0.0.0/8"],
    }


def test_a_trusted_proxy_setting_that_is_not_a_network_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not an address"):
        Settings(trusted_proxies="127.0.0.1,10.0.0.0/33")
