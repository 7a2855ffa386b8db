"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

``webhook-signature`` is ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``
keyed with the base64-decoded part of a ``whsec_`` secret, so the public
``standardwebhooks`` verifier accepts it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

from ..config.variables import signing_key


def signature(key: bytes, callback_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    signed = f"{callback_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(key: bytes, callback_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """All Standard Webhooks headers of one attempt, plus the JSON content type."""
    return {
        "content-type": "application/json",
        "webhook-id": callback_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, callback_id, timestamp, body),
    }


class SigningKeys:
    """Chooses the signing key for a callback URL: the longest matching prefix, else the default.

    The older system chose a key by callback URL; prefixes
    (``CALLBACK_SIGNING_SECRETS``) express the same without a code change.
    """

    def __init__(self, default_secret: str, by_prefix: Iterable[tuple[str, str]] = ()) -> None:
        self._default = signing_key(default_secret)
        pairs = [(prefix, signing_key(secret)) for prefix, secret in by_prefix]
        self._by_prefix = sorted(pairs, key=lambda pair: -len(pair[0]))

    def for_url(self, url: str) -> bytes:
        """The HMAC key for ``url``."""
        for prefix, key in self._by_prefix:
            if url.startswith(prefix):
                return key
        return self._default
