"""One attempt to take a delivery to its endpoint: where to connect (the SSRF guard, at every
attempt), the signed headers, the POST, and a short excerpt of the answer.

Connections are kept alive and reused per destination: the checked address, its port, TLS and
the name the certificate must match, so a connection opened for one name never carries another
name's deliveries. The client keeps no cookies, reads no proxy from the environment, follows no
redirect and never decompresses an answer (only its first bytes are read).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from standardwebhooks.webhooks import Webhook

from app.kit.timeutil import utcnow
from app.models.webhooks import WebhookEndpoint
from app.webhooks.destinations import RefusedDestination, Resolver, destination
from app.webhooks.signing import signed_headers, unseal

EXCERPT_BYTES = 200
USER_AGENT = "keyhouse-webhooks"
# Endpoints whose signers are kept ready (their secrets opened once, not at every attempt).
SIGNERS_KEPT = 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int | None
    excerpt: str | None

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Sender:
    def __init__(
        self,
        server_secret: bytes,
        allowed_hosts: Collection[str],
        resolver: Resolver,
        *,
        timeout_seconds: float,
        max_connections: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._allowed = allowed_hosts
        self._resolver = resolver
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_connections = max_connections
        self._clock = clock
        self._client: aiohttp.ClientSession | None = None
        self._server_secret = server_secret
        # Keyed by the sealed secrets themselves: a rotation makes a new entry, never a stale
        # one. Only in this process's memory, like the server secret that opens them.
        self._signers: dict[tuple[str, ...], tuple[Webhook, ...]] = {}

    def _session(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop (the worker is built before it starts).
        if self._client is None:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                auto_decompress=False,
            )
        return self._client

    def signers(self, endpoint: WebhookEndpoint) -> Sequence[Webhook]:
        """The current secret's signer first; the previous one's too during its overlap after
        a rotation."""
        until = endpoint.previous_secret_until
        previous = endpoint.previous_sealed_secret
        if previous is None or until is None or until <= self._clock():
            return self._opened(endpoint.id, endpoint.sealed_secret)
        return self._opened(endpoint.id, endpoint.sealed_secret, previous)

    def _opened(self, endpoint_id: str, *sealed: str) -> tuple[Webhook, ...]:
        cache_key = (endpoint_id, *sealed)
        signers = self._signers.get(cache_key)
        if signers is None:
            if len(self._signers) >= SIGNERS_KEPT:
                self._signers.clear()
            signers = tuple(
                Webhook(unseal(self._server_secret, endpoint_id, secret)) for secret in sealed
            )
            self._signers[cache_key] = signers
        return signers

    async def send(self, event_id: str, payload: str, endpoint: WebhookEndpoint) -> Outcome:
        try:
            target = await destination(endpoint.url, self._allowed, self._resolver)
        except RefusedDestination as refusal:
            return Outcome(None, str(refusal)[:EXCERPT_BYTES])
        headers = {
            # Signed at the wall clock's time: the receiver compares it with its own.
            **signed_headers(event_id, payload, utcnow(), self.signers(endpoint)),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "host": target.host_header,
        }
        try:
            async with self._session().post(
                target.url,
                data=payload.encode(),
                headers=headers,
                allow_redirects=False,  # a redirect is a failed attempt, never followed
                server_hostname=target.server_name if target.url.startswith("https") else None,
            ) as response:
                excerpt = await _excerpt(response)
        except (aiohttp.ClientError, TimeoutError) as error:
            return Outcome(None, f"{type(error).__name__}: {error}"[:EXCERPT_BYTES])
        return Outcome(response.status, excerpt)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


async def _excerpt(response: aiohttp.ClientResponse) -> str:
    """The answer's first bytes, whatever the receiver sends (the rest is never read: the
    connection is closed rather than reused when more was sent)."""
    excerpt = b""
    try:
        while len(excerpt) < EXCERPT_BYTES:
            chunk = await response.content.read(EXCERPT_BYTES - len(excerpt))
            if not chunk:
                break
            excerpt += chunk
    except (TimeoutError, aiohttp.ClientError):
        pass
    return excerpt.decode("utf-8", "replace")
