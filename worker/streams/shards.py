"""Which shard a callback lives in, and which shards a namespace has.

A callback's shard is a stable hash (CRC-32, the same in every process and
version) of its target's ``host:port``, so every callback of one host lives in
one shard and that shard's leader keeps the host's state exact: its
concurrency cap, its fairness share, later its learned rate and circuit.

``CALLBACK_SHARDS`` may change on a live namespace. Every producer and worker
records the count it uses in the ``shards`` set; leaders lead every shard
below the largest count ever recorded, and a shard past the current count
(which producers no longer route to) is led only while it holds work, so it
drains. Nothing is moved between shards.
"""

from __future__ import annotations

import zlib
from collections.abc import Generator
from typing import Any
from urllib.parse import urlsplit

from .client import text
from .keys import Keys
from .protocol import Command

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_SHARDS = 256  # CALLBACK_SHARDS' upper bound: a larger (or garbled) recorded count is ignored


def host_port(url: str) -> str:
    """``host:port`` of an http(s) URL, lower-case, with the scheme's default port filled in."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port or DEFAULT_PORTS.get(parts.scheme.lower(), 0)}"


def shard_of(url: str, shards: int) -> int:
    """The shard (``0 .. shards - 1``) of a callback to ``url``."""
    if shards <= 1:
        return 0
    return zlib.crc32(host_port(url).encode("utf-8", "surrogateescape")) % shards


def record_count(keys: Keys, shards: int) -> Generator[Command, Any, None]:
    """Operation: note that ``shards`` shards are in use (run once by each producer and worker)."""
    yield Command("sadd", (keys.shard_counts, str(shards)))


def counts_in_use(keys: Keys, configured: int) -> Generator[Command, Any, int]:
    """Operation: how many shards may hold work: the largest count ever recorded, at least ``configured``."""
    members = yield Command("smembers", (keys.shard_counts,))
    counts = [int(m) for m in map(text, members or ()) if m.isascii() and m.isdigit() and len(m) <= 3]
    return max([configured, *(count for count in counts if count <= MAX_SHARDS)])
