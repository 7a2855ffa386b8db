"""Each host's learned state in Redis, so it outlives a leader: the ``hosts`` hash of a shard, and pauses.

``hosts``: ``host:port`` -> JSON ``{rate, capacity, paused_until, circuit, probe_at, last_status,
in_flight, waiting, updated}`` (times in Unix seconds), written by the shard's leader on its
housekeeping passes for the hosts that changed or are busy, read when a leader starts and by
``ops host list``. A host quiet for ``QUIET`` seconds is deleted (Redis 7.0 has no per-field expiry).

``hosts:paused``: ``host:port`` -> until (Unix ms; ``0``: until resumed), written by ``ops host
pause|resume`` and read by the leader on every pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from .client import texts
from .keys import Keys
from .protocol import AsyncDriver, Batch, Command

QUIET = 600.0  # seconds without news after which a host's learned state is forgotten
MAX_HOSTS = 10_000  # hosts loaded at a leader's start; more are learned afresh


@dataclass(frozen=True)
class HostRecord:
    """One host's state as stored (``circuit``: closed, open or half_open)."""

    host: str
    rate: float
    capacity: float
    paused_until: float
    circuit: str
    probe_at: float
    last_status: int | None
    in_flight: int
    waiting: int
    updated: float

    def encode(self) -> str:
        """The stored JSON."""
        fields = {k: v for k, v in vars(self).items() if k != "host"}
        return json.dumps(
            {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in fields.items()}
        )


def decode(host: str, raw: str) -> HostRecord | None:
    """A stored record, or ``None`` when it is not one this code wrote (set aside silently: it is a cache)."""
    try:
        data = json.loads(raw)
        return HostRecord(
            host=host,
            rate=float(data["rate"]),
            capacity=float(data.get("capacity") or 0.0),
            paused_until=float(data.get("paused_until") or 0.0),
            circuit=str(data.get("circuit", "closed")),
            probe_at=float(data.get("probe_at") or 0.0),
            last_status=None if data.get("last_status") is None else int(data["last_status"]),
            in_flight=int(data.get("in_flight") or 0),
            waiting=int(data.get("waiting") or 0),
            updated=float(data["updated"]),
        )
    except (ValueError, TypeError, KeyError, RecursionError, AttributeError):
        return None


def load(keys: Keys) -> Generator[Command, Any, list[HostRecord]]:
    """Operation: every readable record of the shard (at most ``MAX_HOSTS``)."""
    raw = yield Command("hgetall", (keys.hosts,))
    records = [decode(host, value) for host, value in list(texts(raw).items())[:MAX_HOSTS]]
    return [record for record in records if record is not None]


def save(keys: Keys, records: list[HostRecord], forget: list[str]) -> Generator[Batch, Any, None]:
    """Operation: write ``records`` and delete the ``forget`` hosts, in one round trip."""
    commands = []
    if records:
        commands.append(Command("hset", (keys.hosts,), {"mapping": {r.host: r.encode() for r in records}}))
    if forget:
        commands.append(Command("hdel", (keys.hosts, *forget)))
    if commands:
        yield Batch(tuple(commands), transaction=False)


def pauses(keys: Keys) -> Generator[Command, Any, dict[str, float]]:
    """Operation: hosts an operator paused -> until (Unix seconds; ``inf``: until resumed)."""
    raw = yield Command("hgetall", (keys.hosts_paused,))
    paused = {}
    for host, until in texts(raw).items():
        if until.isascii() and until.isdigit():
            paused[host] = math.inf if int(until) == 0 else int(until) / 1000
    return paused


def pause(keys: Keys, host: str, until_ms: int) -> Generator[Command, Any, None]:
    """Operation: hold ``host`` until ``until_ms`` (0: until resumed)."""
    yield Command("hset", (keys.hosts_paused, host, str(until_ms)))


def resume(keys: Keys, host: str) -> Generator[Command, Any, bool]:
    """Operation: release ``host``; whether it was paused."""
    removed = yield Command("hdel", (keys.hosts_paused, host))
    return bool(removed)


class HostBook:
    """A leader's asyncio front over its shard's host records and pauses."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._driver = AsyncDriver(client)
        self.keys = keys

    async def load(self) -> list[HostRecord]:
        return await self._driver.run(load(self.keys))

    async def save(self, records: list[HostRecord], forget: list[str]) -> None:
        await self._driver.run(save(self.keys, records, forget))

    async def pauses(self) -> Mapping[str, float]:
        return await self._driver.run(pauses(self.keys))
