"""The SSRF guard: address rules, URL rules at enqueue time, and refusals at connect time.

The connect-time tests use the real :class:`Sender` against the real local
receiver (on 127.0.0.1) with ``CALLBACK_ALLOW_PRIVATE`` off: every spelling of
a loopback target must come back ``blocked`` with no request seen.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from conftest import SECRET

from worker.config.settings import Settings
from worker.delivery.sender import AttemptResult, Sender
from worker.delivery.signing import SigningKeys
from worker.delivery.targets import (
    MAX_URL_LENGTH,
    AddressRefused,
    GuardedResolver,
    check_address,
    check_callback_url,
    forbidden_reason,
    guard_literal_host,
    parse_ip_literal,
)
from worker.errors import BlockedAddress, InvalidCallbackURL
from worker.streams.entry import CallbackEntry

# "127.0.0.1" in fullwidth digits: aiohttp maps it to 127.0.0.1 and skips the resolver.
FULLWIDTH_LOOPBACK = "\uff11\uff12\uff17.\uff10.\uff10.\uff11"

# (host as written, the address it denotes, or None when it is a name)
LITERALS: list[tuple[str, str | None]] = [
    ("127.0.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),
    ("0X7F000001", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"),
    ("017700000001", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("10.1", "10.0.0.1"),
    ("0", "0.0.0.0"),
    ("[::1]", "::1"),
    ("::ffff:127.0.0.1", "::ffff:7f00:1"),
    ("[::ffff:169.254.169.254]", "::ffff:a9fe:a9fe"),
    ("fe80::1%eth0", "fe80::1"),
    (FULLWIDTH_LOOPBACK, "127.0.0.1"),
    ("127\u30020\u30020\u30021", "127.0.0.1"),  # ideographic full stops are label separators in IDNA
    ("93.184.216.34", "93.184.216.34"),
    ("2606:4700:4700::1111", "2606:4700:4700::1111"),
    ("example.com", None),
    ("localhost", None),
    ("1.2.3.example", None),
    ("127..1", None),
    (".127.0.0.1", None),
    ("", None),
]


@pytest.mark.parametrize(("host", "expected"), LITERALS)
def test_parse_ip_literal(host, expected):
    parsed = parse_ip_literal(host)
    assert (None if parsed is None else str(parsed)) == expected


# (address, a fragment of the reason it is refused; None = public, allowed)
ADDRESSES: list[tuple[str, str | None]] = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local (cloud metadata)"),
    ("169.254.0.1", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.255", "carrier-grade NAT"),
    ("0.0.0.0", "this-network"),
    ("192.0.2.10", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("::1", "loopback"),
    ("::", "private"),
    ("fe80::1", "link-local"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("64:ff9b::7f00:1", "NAT64"),
    ("::ffff:127.0.0.1", "loopback (embedded in IPv6)"),
    ("::ffff:169.254.169.254", "link-local (cloud metadata) (embedded in IPv6)"),
    ("::ffff:10.0.0.1", "private (embedded in IPv6)"),
    ("::127.0.0.1", "loopback (embedded in IPv6)"),  # deprecated IPv4-compatible form
    ("2002:7f00:1::", "loopback (embedded in IPv6)"),  # 6to4 of 127.0.0.1
    ("2002:a9fe:a9fe::1", "link-local (cloud metadata) (embedded in IPv6)"),  # 6to4 of the metadata address
    ("2002:c0a8:101::1", "private (embedded in IPv6)"),  # 6to4 of 192.168.1.1
    # Public: allowed.
    ("93.184.216.34", None),
    ("8.8.8.8", None),
    ("172.32.0.1", None),
    ("172.15.255.255", None),
    ("100.63.255.255", None),
    ("100.128.0.0", None),
    ("2606:4700:4700::1111", None),
    ("2001:4860:4860::8888", None),
    ("::ffff:93.184.216.34", None),
    ("2002:5db8:d822::1", None),  # 6to4 of a public address
]


@pytest.mark.parametrize(("address", "reason"), ADDRESSES)
def test_forbidden_reason(address, reason):
    got = forbidden_reason(ipaddress.ip_address(address))
    if reason is None:
        assert got is None
    else:
        assert got is not None
        assert reason in got


# Every spelling of a forbidden address, through parse_ip_literal: (host, reason fragment)
SPELLINGS: list[tuple[str, str]] = [
    ("2130706433", "loopback"),
    ("0x7f000001", "loopback"),
    ("0177.0.0.1", "loopback"),
    ("127.1", "loopback"),
    ("10.1", "private"),
    ("0", "this-network"),
    ("0251.0376.0251.0376", "cloud metadata"),  # 169.254.169.254 in octal
    ("2852039166", "cloud metadata"),  # 169.254.169.254 in decimal
    ("[::ffff:127.0.0.1]", "loopback"),
    (FULLWIDTH_LOOPBACK, "loopback"),
]


@pytest.mark.parametrize(("host", "reason"), SPELLINGS)
def test_every_spelling_of_a_forbidden_address_is_recognised(host, reason):
    address = parse_ip_literal(host)
    assert address is not None
    got = forbidden_reason(address)
    assert got is not None
    assert reason in got


# (URL, a fragment of the message) refused whatever CALLBACK_ALLOW_PRIVATE says
BAD_SHAPES: list[tuple[Any, str]] = [
    ("ftp://example.com/hook", "must start with http:// or https://"),
    ("file:///etc/passwd", "must start with http:// or https://"),
    ("javascript:alert(1)", "must start with http:// or https://"),
    ("gopher://example.com/", "must start with http:// or https://"),
    ("example.com/hook", "must start with http:// or https://"),
    ("//example.com/hook", "must start with http:// or https://"),
    ("", "must start with http:// or https://"),
    ("http:///hook", "has no host"),
    ("https://", "has no host"),
    ("http://user:pw@example.com/", "must not carry credentials"),
    ("http://user@example.com/", "must not carry credentials"),
    ("http://:pw@example.com/", "must not carry credentials"),
    ("http://example.com /hook", "whitespace or control characters"),
    (" http://example.com/hook", "whitespace or control characters"),
    ("http://example.com/hook\n", "whitespace or control characters"),
    ("http://example.com/a\tb", "whitespace or control characters"),
    ("http://example.com/\x00", "whitespace or control characters"),
    ("http://example.com/\x7f", "whitespace or control characters"),
    ("http://example.com/\x85", "whitespace or control characters"),
    ("http://example.com/\x9b", "whitespace or control characters"),
    ("http://\udcff.example/", "lone surrogate"),  # e.g. decoded with surrogateescape; cannot be encoded
    ("http://example.com/" + "a" * MAX_URL_LENGTH, f"the limit is {MAX_URL_LENGTH}"),
    ("http://example.com:0/", "port 0"),
    ("http://example.com:99999/", "cannot be parsed"),
    ("http://[::1/", "cannot be parsed"),
    (b"http://example.com/", "must be a string, got bytes"),
    (None, "must be a string, got NoneType"),
    ("http://127.0.0.1./", "IP address with a trailing dot"),
    ("http://exa\u200bmple.com/", "invisible formatting characters"),
    ("http://exa\u202emple.com/", "invisible formatting characters"),
    ("http://example.com\u2066/", "invisible formatting characters"),
]

SECRET_URLS = [
    "http://[::1/?token=SECRET",
    "ftp://user:SECRET@example.com/",
    "https://user:SECRET@example.com/?token=SECRET",
    "http://example.com:99999/?token=SECRET",
    "https:///SECRET",
]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_a_refused_url_is_never_echoed_in_the_error(url):
    with pytest.raises(InvalidCallbackURL) as caught:
        check_callback_url(url, allow_private=False)
    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize(("url", "why"), BAD_SHAPES)
def test_url_shape_rules_always_apply(url, why, allow_private):
    with pytest.raises(InvalidCallbackURL) as caught:
        check_callback_url(url, allow_private=allow_private)
    assert isinstance(caught.value, ValueError)
    assert why in str(caught.value)


def test_a_url_at_the_length_limit_is_accepted():
    url = "https://example.com/"
    url += "a" * (MAX_URL_LENGTH - len(url))
    assert check_callback_url(url, allow_private=False) == url


# (URL, the kind of address named in the message) refused unless private targets are allowed
PRIVATE_URLS: list[tuple[str, str]] = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://localhost/hook", "loopback"),
    ("http://LocalHost./hook", "loopback"),
    ("http://x.localhost/hook", "loopback"),
    ("http://a.b.localhost:9000/hook", "loopback"),
    ("http://10.0.0.5/hook", "private"),
    ("http://172.16.3.4/hook", "private"),
    ("http://192.168.0.1/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://100.64.1.1/", "carrier-grade NAT"),
    ("http://0.0.0.0:8000/", "this-network"),
    ("http://[::1]:8000/", "loopback"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://[fc00::1]/", "unique-local"),
    ("http://[::ffff:127.0.0.1]/", "loopback (embedded in IPv6)"),
    ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
    ("http://[2002:7f00:1::]/", "loopback (embedded in IPv6)"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://10.1/", "private"),
    (f"http://{FULLWIDTH_LOOPBACK}/", "loopback"),
]


@pytest.mark.parametrize(("url", "kind"), PRIVATE_URLS)
def test_private_targets_are_refused_at_enqueue_time(url, kind):
    with pytest.raises(InvalidCallbackURL) as caught:
        check_callback_url(url, allow_private=False)
    message = str(caught.value)
    assert kind in message
    assert "CALLBACK_ALLOW_PRIVATE=1" in message


@pytest.mark.parametrize(("url", "kind"), PRIVATE_URLS)
def test_private_targets_pass_when_allowed(url, kind):
    assert check_callback_url(url, allow_private=True) == url


PUBLIC_URLS = [
    "https://example.com/hook",
    "http://example.com:8080/hook?x=1#frag",
    "HTTPS://Example.COM/Hook",
    "https://93.184.216.34/hook",
    "https://[2606:4700:4700::1111]/hook",
    "https://localhost.example.com/hook",  # only the name localhost and its subdomains are loopback
    "https://b\u00fccher.example/hook",  # an IDN host is a name, checked when it resolves
]


@pytest.mark.parametrize("url", PUBLIC_URLS)
def test_public_targets_are_accepted_and_returned_unchanged(url):
    assert check_callback_url(url, allow_private=False) == url


def test_check_address_and_guard_literal_host():
    check_address("example.com", "93.184.216.34")
    with pytest.raises(BlockedAddress, match=r"evil\.example resolves to 127\.0\.0\.1 \(loopback\)"):
        check_address("evil.example", "127.0.0.1")
    with pytest.raises(BlockedAddress, match="not an IP address"):
        check_address("evil.example", "not-an-address")
    guard_literal_host("example.com")  # a name is left to the resolver
    guard_literal_host("93.184.216.34")
    with pytest.raises(BlockedAddress, match="loopback"):
        guard_literal_host("0x7f000001")


# -- the resolver ------------------------------------------------------------------------------


class StaticResolver(AbstractResolver):
    """A real resolver with a fixed table; each lookup of a host returns its next answer."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self._table = {host: list(answers) for host, answers in table.items()}
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        answers = self._table.get(host)
        if not answers:
            raise OSError(f"{host} does not resolve")
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass


def test_the_guarded_resolver_refuses_a_name_that_resolves_to_loopback():
    resolver = GuardedResolver(StaticResolver({"rebind.test": [["127.0.0.1"]]}))
    with pytest.raises(AddressRefused, match=r"rebind\.test resolves to 127\.0\.0\.1 \(loopback\)"):
        asyncio.run(resolver.resolve("rebind.test", 80))


def test_the_guarded_resolver_keeps_only_allowed_addresses():
    resolver = GuardedResolver(StaticResolver({"mixed.test": [["10.0.0.1", "93.184.216.34", "::1", "fd00::1"]]}))
    results = asyncio.run(resolver.resolve("mixed.test", 443))
    assert [result["host"] for result in results] == ["93.184.216.34"]
    assert results[0]["port"] == 443


def test_the_guarded_resolver_checks_every_lookup_so_a_rebound_name_is_refused():
    inner = StaticResolver({"rebind.test": [["93.184.216.34"], ["169.254.169.254"]]})
    resolver = GuardedResolver(inner)

    async def twice() -> list[ResolveResult]:
        first = await resolver.resolve("rebind.test", 80)
        with pytest.raises(AddressRefused, match="cloud metadata"):
            await resolver.resolve("rebind.test", 80)
        return first

    assert [result["host"] for result in asyncio.run(twice())] == ["93.184.216.34"]
    assert inner.lookups == ["rebind.test", "rebind.test"]


def _post_through(resolver: AbstractResolver, url: str) -> int:
    async def post() -> int:
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.post(url, data=b"{}", allow_redirects=False) as response,
        ):
            return response.status

    return asyncio.run(post())


def test_a_rebinding_name_is_refused_when_aiohttp_connects(receiver):
    url = f"http://rebind.test:{receiver.port}/ok"
    # Control: the same resolver, unguarded, does reach the receiver.
    assert _post_through(StaticResolver({"rebind.test": [["127.0.0.1"]]}), url) == 204
    assert len(receiver.snapshot()) == 1

    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        _post_through(GuardedResolver(StaticResolver({"rebind.test": [["127.0.0.1"]]})), url)
    # The sender reports an AddressRefused inside the connector error as "blocked".
    assert isinstance(caught.value.os_error, AddressRefused)
    assert len(receiver.snapshot()) == 1


# -- the real sender against the real receiver -------------------------------------------------


def _settings(allow_private: bool) -> Settings:
    return Settings.from_env(
        {
            "CALLBACK_SIGNING_SECRET": SECRET,
            "CALLBACK_ALLOW_PRIVATE": "1" if allow_private else "0",
            "CALLBACK_TIMEOUT": "3",
        }
    )


def _send(settings: Settings, url: str) -> AttemptResult:
    async def send() -> AttemptResult:
        sender = Sender(settings, SigningKeys(settings.signing_secret, settings.signing_secrets))
        try:
            return await sender.send(CallbackEntry("msg_targets", url, '{"ok":true}'))
        finally:
            await sender.close()

    return asyncio.run(send())


LOOPBACK_HOSTS = [
    "127.0.0.1",
    "localhost",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "127.1",
    "[::ffff:127.0.0.1]",
    "[::1]",
    FULLWIDTH_LOOPBACK,
]


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_the_sender_refuses_every_spelling_of_loopback(receiver, host):
    result = _send(_settings(allow_private=False), f"http://{host}:{receiver.port}/ok")
    assert (result.status, result.error) == (None, "blocked"), result.detail
    assert receiver.snapshot() == []


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM):
            return True
    except OSError:
        return False


# Spellings aiohttp itself connects with (it rejects 2130706433, 0177.0.0.1 and 127.1 as non-canonical).
REACHABLE_HOSTS = [
    "127.0.0.1",
    "localhost",
    "0x7f000001",
    pytest.param(
        "[::ffff:127.0.0.1]", marks=pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 sockets on this machine")
    ),
    FULLWIDTH_LOOPBACK,
]


@pytest.mark.parametrize("host", REACHABLE_HOSTS)
def test_with_private_targets_allowed_the_same_sender_reaches_the_receiver(receiver, host):
    result = _send(_settings(allow_private=True), f"http://{host}:{receiver.port}/ok")
    assert (result.status, result.error) == (204, None), result.detail
    arrivals = receiver.snapshot()
    assert [(a.webhook_id, a.verified) for a in arrivals] == [("msg_targets", True)]
