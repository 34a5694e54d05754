"""Idempotency keys for createApiKey and rotateApiKey, as Stripe does them.

The first request with a given idempotency key does the work; a retry with the same key and the
same input gets the same answer (the same key and secret), and the same key with a different
input is refused. The secret is sealed with AES-GCM under a key derived from the idempotency key,
which is stored only as a digest, so the stored record is useless without the client's key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from datetime import timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.keys.models import IdempotencyRecord
from app.timeutil import utcnow

RETENTION = timedelta(hours=24)
MAX_LENGTH = 255


def _derive(idempotency_key: str, purpose: bytes) -> bytes:
    return hmac.new(purpose, idempotency_key.encode(), hashlib.sha256).digest()


def _digest(idempotency_key: str) -> str:
    return _derive(idempotency_key, b"keyhouse idempotency lookup").hex()


def request_digest(operation: str, request: dict[str, Any]) -> str:
    canonical = json.dumps([operation, request], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def seal(secret: str, idempotency_key: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(_derive(idempotency_key, b"keyhouse idempotency seal")).encrypt(
        nonce, secret.encode(), None
    )
    return base64.b64encode(nonce + sealed).decode()


def unseal(sealed_secret: str, idempotency_key: str) -> str | None:
    raw = base64.b64decode(sealed_secret)
    try:
        plain = AESGCM(_derive(idempotency_key, b"keyhouse idempotency seal")).decrypt(
            raw[:12], raw[12:], None
        )
    except InvalidTag:
        return None
    return plain.decode()


async def find(
    session: AsyncSession, caller: Caller, idempotency_key: str
) -> IdempotencyRecord | None:
    record = await session.get(
        IdempotencyRecord, (caller.organization_id, _digest(idempotency_key))
    )
    if record is not None and record.created_at < utcnow() - RETENTION:
        # Past its retention: the key may be used afresh.
        await session.delete(record)
        await session.flush()
        return None
    return record


def remember(
    session: AsyncSession,
    caller: Caller,
    idempotency_key: str,
    *,
    operation: str,
    digest: str,
    api_key_id: str,
    secret: str,
    previous_api_key_id: str | None = None,
) -> None:
    session.add(
        IdempotencyRecord(
            organization_id=caller.organization_id,
            key_digest=_digest(idempotency_key),
            operation=operation,
            request_digest=digest,
            api_key_id=api_key_id,
            previous_api_key_id=previous_api_key_id,
            sealed_secret=seal(secret, idempotency_key),
        )
    )
