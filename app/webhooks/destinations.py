"""Where keyhouse may send a webhook: the guard against server-side request forgery.

An endpoint's URL is ``https``; plain ``http`` only to a host the deployment lists in
``KEYHOUSE_WEBHOOK_ALLOW_HTTP_HOSTS``. A private, loopback, link-local or otherwise non-public
address is refused unless listed there: an address written in the URL when the endpoint is
created or changed, and a name at every delivery, after it is resolved, so that a name that
later points inside the network is caught. The delivery then connects to the address that was
checked (not to the name again), so a second answer from DNS cannot slip past.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

MAX_URL_LENGTH = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Names to addresses; tests stub it so that no test resolves a real name.
Resolver = Callable[[str, int], Awaitable[list[str]]]


class RefusedDestination(Exception):
    """Why a URL is not a place keyhouse sends webhooks to (a message for the endpoint's owner)."""


def allowed_http_hosts(setting: str) -> frozenset[str]:
    return frozenset(_bare(host) for host in setting.split(",") if host.strip())


def _bare(host: str) -> str:
    return host.strip().lower().removeprefix("[").removesuffix("]")


def _address(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address


def _public(address: IPAddress) -> bool:
    return address.is_global and not address.is_multicast


def _parts(url: str) -> tuple[SplitResult, str]:
    if len(url) > MAX_URL_LENGTH:
        raise RefusedDestination(f"A webhook URL has at most {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise RefusedDestination("The webhook URL is not a valid URL.") from None
    host = _bare(parts.hostname or "")
    if parts.scheme not in ("https", "http") or not host:
        raise RefusedDestination("A webhook URL starts with https:// and names a host.")
    if parts.username is not None or parts.password is not None:
        raise RefusedDestination(
            "A webhook URL cannot hold a user name or password: the signature authenticates "
            "keyhouse to the receiver."
        )
    if parts.fragment:
        raise RefusedDestination("A webhook URL has no #fragment.")
    return parts, host


def check_url(url: str, allowed_hosts: Collection[str]) -> str:
    """The URL as stored, or RefusedDestination. Never resolves or connects to anything."""
    parts, host = _parts(url)
    listed = host in allowed_hosts
    if parts.scheme == "http" and not listed:
        raise RefusedDestination(
            "A webhook URL must use https:// (plain http only to hosts the deployment lists in "
            "KEYHOUSE_WEBHOOK_ALLOW_HTTP_HOSTS)."
        )
    address = _address(host)
    if address is not None and not listed and not _public(address):
        raise RefusedDestination(
            f"{address} is a private, loopback or link-local address: keyhouse sends webhooks "
            "to public addresses only."
        )
    return parts.geturl()


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one attempt connects: the checked address, and the name the URL gave it (for the
    Host header and TLS)."""

    url: str  # the URL with the host replaced by the checked address
    host_header: str
    server_name: str


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def destination(url: str, allowed_hosts: Collection[str], resolve: Resolver) -> Destination:
    """The address to send to now, after resolving the URL's name and checking every address it
    resolves to; RefusedDestination otherwise."""
    parts, host = _parts(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    listed = host in allowed_hosts
    address = _address(host)
    if address is None:
        try:
            answers = [_address(found) for found in await resolve(host, port)]
        except OSError:
            raise RefusedDestination(f"The name {host} does not resolve.") from None
        addresses = [found for found in answers if found is not None]
        if not addresses:
            raise RefusedDestination(f"The name {host} does not resolve.")
        if not listed and not all(_public(found) for found in addresses):
            raise RefusedDestination(
                f"The name {host} resolves to a private, loopback or link-local address."
            )
        address = addresses[0]
    elif not listed and not _public(address):
        raise RefusedDestination(f"{address} is a private, loopback or link-local address.")
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    return Destination(
        url=parts._replace(netloc=netloc).geturl(),
        host_header=parts.netloc,
        server_name=host,
    )
