"""Standard Webhooks ``v1a`` signatures: Ed25519 over ``{id}.{timestamp}.{body}``, keys ``whsk_`` / ``whpk_``.

Receivers verify with the public key alone (no shared secret to leak); the
worker signs with the secret key. During a migration both ``v1`` (HMAC) and
``v1a`` go in the ``webhook-signature`` header, space-separated, as the
standard allows: a receiver checks whichever it knows.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["Ed25519PrivateKey", "generate", "private_key", "public_key", "signature"]
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..config.parsers import ED25519_PREFIX, ed25519_seed

PUBLIC_PREFIX = "whpk_"


def private_key(secret: str) -> Ed25519PrivateKey:
    """The signing key of a ``whsk_`` secret key; raises ``ValueError`` if it is malformed."""
    return Ed25519PrivateKey.from_private_bytes(ed25519_seed(secret))


def signature(key: Ed25519PrivateKey, callback_id: str, timestamp: int, body: bytes) -> str:
    """``v1a,<base64 Ed25519 signature of "{id}.{timestamp}.{body}">`` for one attempt."""
    signed = f"{callback_id}.{timestamp}.".encode() + body
    return "v1a," + base64.b64encode(key.sign(signed)).decode()


def public_key(key: Ed25519PrivateKey) -> str:
    """The ``whpk_`` public key receivers verify ``v1a`` signatures with."""
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_PREFIX + base64.b64encode(raw).decode()


def generate() -> tuple[str, str]:
    """A new key pair: (``whsk_`` secret key for ``CALLBACK_SIGNING_KEY``, ``whpk_`` public key for receivers)."""
    key = Ed25519PrivateKey.generate()
    return ED25519_PREFIX + base64.b64encode(key.private_bytes_raw()).decode(), public_key(key)
