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
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..config.variables import signing_key

DEFAULT_PORTS = {"http": 80, "https": 443}


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
    (``CALLBACK_SIGNING_SECRETS``) express the same without a code change. A
    prefix matches a URL of the same origin only (scheme, host and port exactly;
    ``https://customer.example`` never covers ``https://customer.example.attacker.net``
    or port 9999) whose path starts with the prefix's path at a ``/`` boundary
    (``/customer`` covers ``/customer`` and ``/customer/...``, not ``/customerX``).
    """

    def __init__(self, default_secret: str, by_prefix: Iterable[tuple[str, str]] = ()) -> None:
        self._default = signing_key(default_secret)
        pairs = [(url_prefix(prefix), signing_key(secret)) for prefix, secret in by_prefix]
        self._by_prefix = sorted(pairs, key=lambda pair: -len(pair[0].path))

    def for_url(self, url: str) -> bytes:
        """The HMAC key for ``url``."""
        if not self._by_prefix:
            return self._default
        try:
            target = url_prefix(url)
        except ValueError:
            return self._default
        for prefix, key in self._by_prefix:
            if prefix.covers(target):
                return key
        return self._default


@dataclass(frozen=True)
class UrlPrefix:
    """An origin and a path prefix: what a ``CALLBACK_SIGNING_SECRETS`` key stands for."""

    scheme: str
    host: str
    port: int
    path: str

    def covers(self, url: UrlPrefix) -> bool:
        """Whether ``url`` (parsed the same way) is under this prefix."""
        if (url.scheme, url.host, url.port) != (self.scheme, self.host, self.port):
            return False
        base = self.path.rstrip("/")
        return url.path == base or url.path.startswith(base + "/")


def url_prefix(url: str) -> UrlPrefix:
    """Parse an http(s) URL into origin and path; raises ``ValueError`` for anything else."""
    parts = urlsplit(url)
    port = parts.port  # raises ValueError for a malformed port
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    host = parts.hostname.lower().rstrip(".")
    return UrlPrefix(parts.scheme, host, port or DEFAULT_PORTS[parts.scheme], parts.path or "/")
