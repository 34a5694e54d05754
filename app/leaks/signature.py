"""Who may report a leaked key: a secret scanner that signs its report, as GitHub's secret
scanning partner program does. The raw body is signed with ECDSA (SHA-256); the signature comes
base64-encoded in ``GITHUB-PUBLIC-KEY-SIGNATURE``, and ``GITHUB-PUBLIC-KEY-IDENTIFIER`` names
which of the scanner's public keys made it.

The keys are configured (``KEYHOUSE_LEAK_REPORT_PUBLIC_KEYS``) as the JSON document GitHub
publishes them in, ``{"public_keys": [{"key_identifier", "key", "is_current"}]}`` with PEM keys,
rather than fetched: keyhouse may run where it cannot reach GitHub's API.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

IDENTIFIER_HEADER = "github-public-key-identifier"
SIGNATURE_HEADER = "github-public-key-signature"


class BadReportKeys(ValueError):
    """KEYHOUSE_LEAK_REPORT_PUBLIC_KEYS is not a document of ECDSA public keys."""


def parse_public_keys(document: str) -> dict[str, ec.EllipticCurvePublicKey]:
    """The keys by identifier; raises BadReportKeys (at start, naming what is wrong)."""
    try:
        entries = json.loads(document)["public_keys"]
        keys = {entry["key_identifier"]: entry["key"] for entry in entries}
    except (ValueError, KeyError, TypeError):
        raise BadReportKeys(
            'KEYHOUSE_LEAK_REPORT_PUBLIC_KEYS must be {"public_keys": [{"key_identifier": ..., '
            '"key": "-----BEGIN PUBLIC KEY-----...", "is_current": ...}]}'
        ) from None
    parsed: dict[str, ec.EllipticCurvePublicKey] = {}
    for identifier, pem in keys.items():
        try:
            key = load_pem_public_key(str(pem).encode())
        except (ValueError, UnsupportedAlgorithm):
            raise BadReportKeys(f"leak report key {identifier!r} is not a PEM public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise BadReportKeys(f"leak report key {identifier!r} is not an ECDSA key")
        parsed[str(identifier)] = key
    return parsed


def signed_by_a_reporter(
    body: bytes, headers: Mapping[str, str], keys: Mapping[str, ec.EllipticCurvePublicKey]
) -> bool:
    key = keys.get(headers.get(IDENTIFIER_HEADER, ""))
    if key is None:
        return False
    try:
        signature = base64.b64decode(headers.get(SIGNATURE_HEADER, ""), validate=True)
        key.verify(signature, body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True
