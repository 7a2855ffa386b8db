"""Verifying Standard Webhooks ``v1a`` (Ed25519) signatures as a receiver does, with ``cryptography`` directly.

The public ``standardwebhooks`` package verifies ``v1`` only; receivers in tests,
the bench and the README's example verify ``v1a`` this way.
"""

from __future__ import annotations

import base64

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PUBLIC_PREFIX = "whpk_"


def verifies(public: str, callback_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """Whether some ``v1a`` signature in ``header`` is valid for this attempt under ``public`` (``whpk_``)."""
    if not public.startswith(PUBLIC_PREFIX):
        return False
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public[len(PUBLIC_PREFIX) :]))
    signed = f"{callback_id}.{timestamp}.".encode() + body
    for part in header.split():
        version, _, value = part.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(value), signed)
            return True
        except (InvalidSignature, ValueError):  # not this key's, or not base64: try the next one
            continue
    return False
