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
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..config.parsers import signing_key
from ..config.settings import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DEFAULT_PORTS = {"http": 80, "https": 443}
CHOSEN_URLS = 4096  # URLs whose key a SigningKeys remembers (then it starts over): bounded memory


def signature(key: bytes, callback_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    signed = f"{callback_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    key: bytes, callback_id: str, timestamp: int, body: bytes, ed25519_key: Ed25519PrivateKey | None = None
) -> dict[str, str]:
    """All Standard Webhooks headers of one attempt, plus the JSON content type.

    With ``ed25519_key`` the signature header holds ``v1,… v1a,…`` (space-separated): receivers
    check whichever they know.
    """
    signed = signature(key, callback_id, timestamp, body)
    if ed25519_key is not None:
        from . import ed25519  # cryptography costs ~6 MB per process: loaded only with an Ed25519 key

        signed += " " + ed25519.signature(ed25519_key, callback_id, timestamp, body)
    return {
        "content-type": "application/json",
        "webhook-id": callback_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signed,
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

    def __init__(self, default_secret: str, by_prefix: Iterable[tuple[str, str]] = (), ed25519_key: str = "") -> None:
        self._default = signing_key(default_secret)
        self._ed25519 = _private_key(ed25519_key) if ed25519_key else None
        pairs = [(url_prefix(prefix), signing_key(secret)) for prefix, secret in by_prefix]
        self._by_prefix = sorted(pairs, key=lambda pair: -len(pair[0].path))
        self._chosen: dict[str, bytes] = {}  # by URL: parsing one per attempt costs more than signing

    @classmethod
    def from_settings(cls, settings: Settings) -> SigningKeys:
        """The keys the settings name: default and per-prefix HMAC secrets, and the Ed25519 key if set."""
        return cls(settings.signing_secret, settings.signing_secrets, settings.ed25519_key)

    def headers(self, url: str, callback_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The Standard Webhooks headers of one attempt to ``url`` (``v1``, and ``v1a`` with an Ed25519 key)."""
        return headers(self.for_url(url), callback_id, timestamp, body, self._ed25519)

    def for_url(self, url: str) -> bytes:
        """The HMAC key for ``url``."""
        if not self._by_prefix:
            return self._default
        key = self._chosen.get(url)
        if key is None:
            if len(self._chosen) >= CHOSEN_URLS:
                self._chosen.clear()
            key = self._chosen[url] = self._choose(url)
        return key

    def _choose(self, url: str) -> bytes:
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


def _private_key(secret: str) -> Ed25519PrivateKey:
    from . import ed25519

    return ed25519.private_key(secret)
