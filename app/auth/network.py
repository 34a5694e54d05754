"""Where a request comes from: the caller's address, and whether a key may be used from it.

Only a proxy the deployment trusts (``KEYHOUSE_TRUSTED_PROXIES``) may say where the request it
passes on came from; anyone else's ``X-Forwarded-For`` is a claim anyone can make, so the
connection's own peer address is taken instead. uvicorn's ``forwarded_allow_ips`` is set from
the same list (app/cli.py), so the server and keyhouse agree on who is a proxy: uvicorn rewrites
the peer from a trusted proxy's ``X-Forwarded-For``, and the rule here, applied again to an
already rewritten peer, finds that peer untrusted and keeps it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class NetworkProblem(ValueError):
    """Why a text is not an address or a CIDR block, in words a person can act on."""


def parse_network(text: str) -> IPNetwork:
    """An IPv4 or IPv6 address (a network of one) or a CIDR block. A block with host bits set
    (``10.0.0.1/24``) is refused rather than silently widened or narrowed."""
    value = text.strip()
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise NetworkProblem("is not an IPv4 or IPv6 address or CIDR block") from error
        raise NetworkProblem(f"has host bits set; the block is {loose}") from error


def parse_address(text: str) -> IPAddress | None:
    """An address as a header or body states it (an IPv6 one maybe in brackets, either maybe
    with a port); None when it is not one."""
    value = text.strip()
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else value
    elif value.count(":") == 1:
        value = value.partition(":")[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket (::ffff:203.0.113.9) is that IPv4 client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_within(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address in network for network in networks)


def client_address(
    peer: str | None, headers: Mapping[str, str], trusted: Sequence[IPNetwork]
) -> IPAddress | None:
    """The address a request came from. From a trusted proxy: the right-most address of
    ``X-Forwarded-For`` that is not itself a trusted proxy (each proxy appends the address it
    saw; what is left of the last untrusted one may be forged), else ``X-Real-IP``. From anyone
    else: the peer itself, whatever the headers say. ``headers`` by lower-case name."""
    address = None if peer is None else parse_address(peer)
    if address is None or not trusted or not is_within(address, trusted):
        return address
    forwarded = headers.get("x-forwarded-for")
    if forwarded:
        hops = [hop.strip() for hop in forwarded.split(",")]
        for hop in reversed(hops):
            seen = parse_address(hop)
            if seen is None:
                return None  # a hop no one can check: not an address to allow
            if not is_within(seen, trusted):
                return seen
        return parse_address(hops[0])
    real = headers.get("x-real-ip")
    if real:
        return parse_address(real)
    return address


def request_client(
    scope_client: tuple[str, int] | list[Any] | None,
    headers: Mapping[str, str],
    trusted: Sequence[IPNetwork],
) -> IPAddress | None:
    """:func:`client_address` of an ASGI request (its ``scope["client"]`` and headers)."""
    return client_address(str(scope_client[0]) if scope_client else None, headers, trusted)
