"""Which callback targets the worker may call: URL rules and the SSRF guard.

Callback URLs are customer input. A URL is checked when it is enqueued (shape,
scheme, literal addresses) and again when a connection is made: the resolver
below filters every address DNS returns, so a name that resolves to a private
address (or is re-pointed there later, DNS rebinding) is refused at connect
time. ``CALLBACK_ALLOW_PRIVATE`` turns the address rules off (local receivers,
tests); the URL shape rules always apply.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import unicodedata
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from .. import redact
from ..errors import BlockedAddress, InvalidCallbackURL

MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAMED_BLOCKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "this-network"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "NAT64"),
    ("2001:db8::/32", "documentation"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
    ("fd00:ec2::254/128", "cloud metadata"),
)
_BLOCKS = tuple((ipaddress.ip_network(net), name) for net, name in _NAMED_BLOCKS)


def forbidden_reason(address: IPAddress) -> str | None:
    """Why ``address`` may not be called, or ``None`` when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or _compat_ipv4(address)
        if embedded is not None:
            reason = forbidden_reason(embedded)
            return f"{reason} (embedded in IPv6)" if reason else None
    for network, name in _BLOCKS:
        if address.version == network.version and address in network:
            return name
    if address.is_loopback:
        return "loopback"
    if address.is_private:
        return "private"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified or address.is_reserved or address.is_multicast:
        return "reserved"
    return None


def _compat_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    # Deprecated IPv4-compatible form ::a.b.c.d (not ::1 or ::).
    if int(address) >> 32 == 0 and int(address) > 1:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host string denotes by itself, in any spelling the C resolver accepts.

    Besides dotted quads and IPv6 this covers ``2130706433``, ``0x7f000001``,
    ``0177.0.0.1`` and ``127.1`` (inet_aton forms), which ``ipaddress`` rejects
    but ``getaddrinfo`` happily connects to.
    """
    if not host.isascii():
        # aiohttp (yarl) IDNA-maps a host before asking whether it is an IP literal, so
        # fullwidth digits (U+FF11 U+FF12 U+FF17 ...) reach 127.0.0.1 without the resolver.
        host = unicodedata.normalize("NFKC", host).replace("\u3002", ".")
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if not host or not all(part for part in host.split(".")):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_callback_url(url: object, *, allow_private: bool) -> str:
    """Validate a callback URL at enqueue time; return it unchanged.

    Raises :class:`InvalidCallbackURL` saying what is wrong and how to fix it.
    """
    if not isinstance(url, str):
        raise InvalidCallbackURL(f"callback_url must be a string, got {type(url).__name__}")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidCallbackURL(f"callback_url is {len(url)} characters; the limit is {MAX_URL_LENGTH}")
    return _check_url_text(url, allow_private)


_ASCII_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")


@functools.lru_cache(maxsize=4096)  # pure; a batch repeats few URLs (exceptions are not cached)
def _check_url_text(url: str, allow_private: bool) -> str:
    if _ASCII_SPACE_OR_CONTROL.search(url) or (
        not url.isascii() and any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in url)
    ):
        raise InvalidCallbackURL("callback_url contains whitespace or control characters; percent-encode them")
    if not url.isascii() and any(unicodedata.category(ch) == "Cs" for ch in url):
        raise InvalidCallbackURL("callback_url contains a lone surrogate, which is not valid Unicode text")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidCallbackURL(f"callback_url cannot be parsed ({e}); use an absolute http(s) URL") from None
    if parts.scheme not in ("http", "https"):
        scheme = repr(parts.scheme[:20]) if parts.scheme else "none"
        raise InvalidCallbackURL(f"callback_url must start with http:// or https://; its scheme is {scheme}")
    if not parts.hostname:
        raise InvalidCallbackURL("callback_url has no host; use an absolute URL like https://example.com/hook")
    if parts.username is not None or parts.password is not None:
        raise InvalidCallbackURL(
            "callback_url must not carry credentials (user:password@); receivers verify the webhook signature instead"
        )
    if port == 0:
        raise InvalidCallbackURL("callback_url has port 0; use a real port or none")
    _check_host(parts.hostname)
    if not allow_private:
        address = parse_ip_literal(parts.hostname)
        reason = forbidden_reason(address) if address is not None else None
        hostname = parts.hostname.rstrip(".").lower()
        if reason is None and (hostname == "localhost" or hostname.endswith(".localhost")):
            reason = "loopback"
        if reason is not None:
            raise InvalidCallbackURL(
                f"callback_url targets a {reason} address ({parts.hostname}); such targets are refused "
                "unless CALLBACK_ALLOW_PRIVATE=1 is set"
            )
    return url


def _check_host(hostname: str) -> None:
    """Refuse hosts that can never be delivered to, though ``urlsplit`` accepts them."""
    if not hostname.isascii() and any(unicodedata.category(ch) == "Cf" for ch in hostname):
        raise InvalidCallbackURL(
            "callback_url's host contains invisible formatting characters (bidi controls or zero-width); remove them"
        )
    if hostname.endswith(".") and parse_ip_literal(hostname.rstrip(".")) is not None:
        raise InvalidCallbackURL(
            f"callback_url's host {hostname!r} is an IP address with a trailing dot, which cannot be connected to; "
            "remove the dot"
        )


def check_address(host: str, address: str) -> None:
    """Raise :class:`BlockedAddress` if ``address`` (resolved for ``host``) is forbidden."""
    parsed = parse_ip_literal(address)
    if parsed is None:
        raise BlockedAddress(f"{host} resolved to {address!r}, which is not an IP address")
    reason = forbidden_reason(parsed)
    if reason is not None:
        raise BlockedAddress(f"{host} resolves to {parsed} ({reason}); refused by the SSRF guard")


class AddressRefused(OSError):
    """Raised inside aiohttp's connector when every resolved address is forbidden."""


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that drops forbidden addresses, so the check happens at connect time.

    aiohttp skips the resolver for literal IP hosts; :func:`guard_literal_host`
    covers those before the request is made.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refusal: BlockedAddress | None = None
        for result in results:
            try:
                check_address(host, result["host"])
            except BlockedAddress as e:
                refusal = e
                continue
            allowed.append(result)
        if not allowed:
            # An OSError makes aiohttp report a connection error; the subclass lets the sender tell why.
            raise AddressRefused(str(refusal or f"{host} did not resolve to an allowed address"))
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def guard_literal_host(host: str) -> None:
    """Refuse a literal-IP host that aiohttp would connect to without resolving."""
    address = parse_ip_literal(host)
    if address is not None:
        check_address(host, str(address))


@functools.lru_cache(maxsize=1024)  # a burst repeats few URLs; the check costs more than a small POST's signing
def literal_host_refusal(url: str) -> str | None:
    """Why the SSRF guard refuses ``url``'s host, a literal IP address; ``None`` when it does not.

    :func:`guard_literal_host` of the URL's host, remembered per URL (its
    answer depends on the host alone). A URL that cannot be split raises
    ``ValueError`` as ``urlsplit`` does, uncached.
    """
    try:
        guard_literal_host(urlsplit(url).hostname or "")
    except BlockedAddress as e:
        return str(e)
    return None


def describe(value: Any) -> str:
    """A log-safe rendering of a callback URL: ``scheme://host:port/…`` (see :func:`worker.redact.url`)."""
    return redact.url(value)
