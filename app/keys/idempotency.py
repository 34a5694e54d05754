"""Idempotency keys for createApiKey and rotateApiKey, as Stripe does them.

The first request with a given idempotency key does the work; a retry with the same key and the
same input, from the same API key, gets the same answer (the same key and secret). The same
idempotency key with a different input, or from another API key, is refused: a replay must never
hand a secret to a caller other than the one that made the request (the services run every
permission check before looking for a replay, too).

A record holds the new key's secret sealed with AES-GCM under a key derived from the server
secret (app/kit/server_secret.py) and the idempotency key, and the idempotency key only as a keyed
digest: neither a copy of the database nor a guessed idempotency key opens it alone. Records
are purged 24 hours after they were made.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
from datetime import timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.kit.db import SessionMaker
from app.kit.timeutil import utcnow
from app.models.keys import IdempotencyRecord

RETENTION = timedelta(hours=24)
MAX_LENGTH = 255
PURGE_EVERY_SECONDS = 3600.0

logger = logging.getLogger(__name__)


def _derive(server_secret: bytes, purpose: bytes, idempotency_key: str) -> bytes:
    return hmac.new(
        server_secret, purpose + b"\x00" + idempotency_key.encode(), hashlib.sha256
    ).digest()


def _digest(server_secret: bytes, idempotency_key: str) -> str:
    return _derive(server_secret, b"keyhouse idempotency lookup", idempotency_key).hex()


def request_digest(operation: str, request: dict[str, Any], caller: Caller) -> str:
    """The request's fingerprint, bound to who sent it: the calling key and the scopes it holds.
    Only the key that made a request gets its answer again; any other key, of whatever power,
    does not match (a key being replaced must not read its replacement's secret from a rotation
    another key made, say)."""
    who = [caller.key_id, sorted(caller.scopes)]
    canonical = json.dumps([operation, request, who], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def seal(secret: str, idempotency_key: str, server_secret: bytes) -> str:
    nonce = os.urandom(12)
    key = _derive(server_secret, b"keyhouse idempotency seal", idempotency_key)
    sealed = AESGCM(key).encrypt(nonce, secret.encode(), None)
    return base64.b64encode(nonce + sealed).decode()


def unseal(sealed_secret: str, idempotency_key: str, server_secret: bytes) -> str | None:
    raw = base64.b64decode(sealed_secret)
    key = _derive(server_secret, b"keyhouse idempotency seal", idempotency_key)
    try:
        plain = AESGCM(key).decrypt(raw[:12], raw[12:], None)
    except InvalidTag:
        return None
    return plain.decode()


async def find(
    session: AsyncSession, caller: Caller, idempotency_key: str, server_secret: bytes
) -> IdempotencyRecord | None:
    record = await session.get(
        IdempotencyRecord, (caller.organization_id, _digest(server_secret, idempotency_key))
    )
    if record is not None and record.created_at < utcnow() - RETENTION:
        # Past its retention: the key may be used afresh.
        await session.delete(record)
        await session.flush()
        return None
    return record


async def purge_expired(session: AsyncSession) -> None:
    """Delete every record past its retention (any organization's)."""
    await session.exec(
        delete(IdempotencyRecord).where(col(IdempotencyRecord.created_at) < utcnow() - RETENTION)
    )


async def purge_periodically(sessionmaker: SessionMaker) -> None:
    """Purge expired records every hour until cancelled, so none outlives its retention by
    more than an hour even in an organization that stopped creating keys."""
    while True:
        await asyncio.sleep(PURGE_EVERY_SECONDS)
        try:
            async with sessionmaker() as session:
                await purge_expired(session)
                await session.commit()
        except Exception:
            logger.exception("purging expired idempotency records failed; will retry")


async def remember(
    session: AsyncSession,
    caller: Caller,
    idempotency_key: str,
    server_secret: bytes,
    *,
    operation: str,
    digest: str,
    api_key_id: str,
    secret: str,
    previous_api_key_id: str | None = None,
) -> None:
    # Each new record clears out the expired ones: records never outlive their retention by
    # more than the time to the next idempotent request.
    await purge_expired(session)
    session.add(
        IdempotencyRecord(
            organization_id=caller.organization_id,
            key_digest=_digest(server_secret, idempotency_key),
            operation=operation,
            request_digest=digest,
            api_key_id=api_key_id,
            previous_api_key_id=previous_api_key_id,
            sealed_secret=seal(secret, idempotency_key, server_secret),
        )
    )
