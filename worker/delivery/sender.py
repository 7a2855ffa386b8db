"""The HTTP edge: one aiohttp session per process, one signed POST per attempt."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import aiohttp

from .. import redact
from ..config.settings import Settings
from ..errors import BlockedAddress
from ..streams.entry import CallbackEntry
from . import signing
from .targets import AddressRefused, GuardedResolver, literal_host_refusal

USER_AGENT = "callback-worker/1"
DETAIL_CHARS = 200


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt did: an HTTP status, or a transport error kind, and how long it took."""

    status: int | None
    error: str | None
    detail: str
    retry_after: str | None
    started_at: float
    duration: float


class Sender:
    """Posts callbacks: signed, no redirects, bounded time and response size, SSRF-guarded.

    Create and use it on one event loop; call :meth:`close` when done.
    """

    def __init__(self, settings: Settings, keys: signing.SigningKeys) -> None:
        self._settings = settings
        self._keys = keys
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        settings = self._settings
        connector = aiohttp.TCPConnector(
            limit=0,  # concurrency is the leader's business (global pace, per-host cap)
            resolver=None if settings.allow_private else GuardedResolver(),
            ttl_dns_cache=10,
            enable_cleanup_closed=True,
        )
        timeout = aiohttp.ClientTimeout(total=settings.timeout, sock_connect=settings.connect_timeout)
        return aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers={"user-agent": USER_AGENT},
            auto_decompress=False,
            trust_env=False,
        )

    def use_keys(self, keys: signing.SigningKeys) -> None:
        """Sign from now on with ``keys`` (signing secrets changed at run time)."""
        self._keys = keys

    async def send(self, entry: CallbackEntry) -> AttemptResult:
        """Make one attempt; never raises for network or HTTP failures."""
        if self._session is None:
            self._session = self._open()
        body = entry.body.encode()
        timestamp = int(time.time())
        headers = self._keys.headers(entry.url, entry.callback_id, timestamp, body)
        started = time.time()
        clock = time.perf_counter()
        try:
            if not self._settings.allow_private and (refusal := literal_host_refusal(entry.url)) is not None:
                raise BlockedAddress(refusal)
            async with self._session.post(entry.url, data=body, headers=headers, allow_redirects=False) as response:
                snippet = await response.content.read(self._settings.max_response_bytes)
                if not response.content.at_eof():
                    response.close()  # do not drain an oversized body; drop the connection
                detail = redact.printable(snippet[:DETAIL_CHARS].decode("utf-8", "replace"))[:DETAIL_CHARS]
                return AttemptResult(
                    response.status,
                    None,
                    detail,
                    response.headers.get("retry-after"),
                    started,
                    time.perf_counter() - clock,
                )
        except Exception as e:
            kind, detail = _error_kind(e)
            return AttemptResult(None, kind, detail, None, started, time.perf_counter() - clock)

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


_URLS = re.compile(r"https?://[^\s'\"<>]+")  # aiohttp's texts quote the request URL, tokens included


def _error_kind(error: BaseException) -> tuple[str, str]:
    if isinstance(error, aiohttp.InvalidURL):  # its text is the whole URL, tokens included
        return "invalid_url", f"InvalidURL: {redact.url(error.url)}"
    said = _URLS.sub(lambda found: redact.url(found.group(0)), f"{type(error).__name__}: {error}")
    text = redact.printable(said[: DETAIL_CHARS * 2])[:DETAIL_CHARS]  # escaping may lengthen it: cut after
    refused = getattr(error, "os_error", None)
    if isinstance(refused, AddressRefused):
        return "blocked", str(refused)[:DETAIL_CHARS]  # the guard's reason, not aiohttp's wrapper text
    if isinstance(error, BlockedAddress):
        return "blocked", str(error)[:DETAIL_CHARS]
    if isinstance(error, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout", text
    if isinstance(error, aiohttp.ClientConnectorError):
        return "connect", text
    if isinstance(error, (aiohttp.InvalidURL, ValueError)):
        return "invalid_url", text
    if isinstance(error, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return "protocol", text
    return "network", text
