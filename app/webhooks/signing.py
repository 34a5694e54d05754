"""Signing secrets and signatures, as Standard Webhooks defines them (``whsec_…`` secrets; the
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers), so that a receiver
verifies a delivery with the ``standardwebhooks`` library of its language.

A secret is stored sealed (AES-GCM) under a key derived from the server secret, bound to its
endpoint's id: a copy of the database signs nothing, and a sealed secret moved to another
endpoint does not open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from datetime import datetime

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32
_NONCE_BYTES = 12


def new_signing_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _sealing_key(server_secret: bytes) -> bytes:
    return hmac.new(server_secret, b"keyhouse webhook signing secret", hashlib.sha256).digest()


def seal(server_secret: bytes, endpoint_id: str, signing_secret: str) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(_sealing_key(server_secret)).encrypt(
        nonce, signing_secret.encode(), endpoint_id.encode()
    )
    return base64.b64encode(nonce + sealed).decode()


def unseal(server_secret: bytes, endpoint_id: str, sealed: str) -> str:
    raw = base64.b64decode(sealed)
    opened = AESGCM(_sealing_key(server_secret)).decrypt(
        raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], endpoint_id.encode()
    )
    return opened.decode()


def signed_headers(
    event_id: str, body: str, moment: datetime, signers: Sequence[Webhook]
) -> dict[str, str]:
    """The headers of one attempt: one signature per secret (the current one first; the previous
    one too during its overlap after a rotation), space-separated as the format allows."""
    signature = " ".join(signer.sign(event_id, moment, body) for signer in signers)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }
