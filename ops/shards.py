"""The namespace's shards as operators see them: which may hold work, each one's state, their sums, the fleet.

``ops`` looks at every shard ``0 .. counts_in_use - 1``, not only ``CALLBACK_SHARDS``: a lowered count
leaves the shards past it draining, and their callbacks, retries and dead letters still count. Each
shard is read on its own (its keys share one hash tag), so no command or MULTI spans two shards, as
Redis Cluster requires. Ages are seconds on the Redis clock; the fleet's times are the workers' clocks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import redis

from worker.config.settings import Settings
from worker.errors import WorkerError
from worker.streams.client import texts
from worker.streams.fleet import live
from worker.streams.keys import Keys
from worker.streams.protocol import SyncDriver
from worker.streams.shards import counts_in_use
from worker.streams.status import now_ms
from worker.streams.stream import SyncCallbackStream

COUNTERS = ("delivered", "retried", "dead", "deferred", "handed_back")


class NoSuchShard(WorkerError, ValueError):
    """A ``--shard`` the namespace does not have (its message names the shards it has)."""


def in_use(client: redis.Redis, settings: Settings) -> list[Keys]:
    """The keys of every shard that may hold work, shard 0 first (one, ``shard 0``, without shards)."""
    keys = Keys(settings.namespace, settings.queue)
    return keys.shards(SyncDriver(client).run(counts_in_use(keys, settings.shards)))


def one_of(shards: list[Keys], shard: int | None) -> list[Keys]:
    """``shards``, or only shard ``shard`` of them; :class:`NoSuchShard` if it is not one of them."""
    if shard is None:
        return shards
    if shard >= len(shards):
        raise NoSuchShard(f"shard {shard} is not in use (this namespace has shards 0..{len(shards) - 1})")
    return [shards[shard]]


def shard_status(client: redis.Redis, keys: Keys, configured: int) -> dict[str, Any]:
    """One shard's numbers and leader, as ``ops status`` shows them (``draining``: past ``CALLBACK_SHARDS``)."""
    state = SyncCallbackStream(client, keys).state()
    now, info, stats, group = state.now_ms, state.lease_info, state.stats, state.group
    return {
        "shard": keys.shard,
        "label": keys.label,
        "draining": keys.shard >= configured,
        "backlog": state.length,
        "oldest_age": age(now, state.oldest_ms),
        "group": group is not None,
        "pending": group.pending if group else 0,
        "lag": group.lag if group else None,
        "consumers": [{"shard": keys.shard, **asdict(consumer)} for consumer in state.consumers],
        "delayed": state.delayed,
        "next_due": None if state.next_due_ms is None else max(0.0, (state.next_due_ms - now) / 1000),
        "dead": state.dead,
        "leader": {
            "held": state.lease_held,
            "holder": info.get("holder"),
            "epoch": count(info.get("epoch")) or None,
            "age": age(now, info.get("acquired_ms")),
            "since_renewal": age(now, info.get("renewed_ms")),
            "ttl": state.lease_ttl_ms / 1000 if state.lease_ttl_ms >= 0 else None,
        },
        "counters": {
            name: count(stats.get(name, 0)) or 0 for name in (*COUNTERS, *stats) if name != "last_delivered_ms"
        },
        "last_send_ago": age(now, stats.get("last_delivered_ms")),
    }


def totals(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """The namespace's numbers from its shards' (:func:`shard_status`): sums; the oldest, the soonest, the latest."""
    counters: dict[str, int] = {}
    for shard in shards:
        for name, value in shard["counters"].items():
            counters[name] = counters.get(name, 0) + value

    def known(name: str) -> list[float]:
        return [shard[name] for shard in shards if shard[name] is not None]

    return {
        "backlog": sum(shard["backlog"] for shard in shards),
        "oldest_age": max(known("oldest_age"), default=None),
        "group": any(shard["group"] for shard in shards),
        "pending": sum(shard["pending"] for shard in shards),
        "lag": unread((shard["group"], shard["lag"], shard["backlog"]) for shard in shards),
        "consumers": [consumer for shard in shards for consumer in shard["consumers"]],
        "delayed": sum(shard["delayed"] for shard in shards),
        "next_due": min(known("next_due"), default=None),
        "dead": sum(shard["dead"] for shard in shards),
        "counters": counters,
        "last_send_ago": min(known("last_send_ago"), default=None),
    }


def unread(streams: Iterable[tuple[bool, int | None, int]]) -> int | None:
    """Entries of several shards' streams no consumer read yet, from each ``(has a group, its lag, length)``.

    A stream without a group counts its whole length; ``None`` when no stream has a group, or one cannot
    tell its lag (as ``XINFO GROUPS`` says of one stream).
    """
    rows = list(streams)
    if not any(grouped for grouped, _, _ in rows):
        return None
    lags = [lag if grouped else length for grouped, lag, length in rows]
    return None if None in lags else sum(lag for lag in lags if lag is not None)


def fleet(client: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """The live worker processes (``host:pid``) and how many shards each leads, by name."""
    alive = live(texts(client.hgetall(keys.fleet)), now_ms())  # their own clocks wrote the times
    return [{"process": name, "leads": led} for name, led in sorted(alive.items())]


def count(value: Any) -> int | None:
    """A non-negative integer (or its digits) as read from Redis; ``None`` for anything else."""
    if isinstance(value, str) and 0 < len(value) <= 16 and value.isascii() and value.isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def age(now_ms: int, then_ms: str | int | None) -> float | None:
    """Seconds since ``then_ms``; ``None`` when it is missing or not a time (whatever wrote it)."""
    then = count(then_ms)
    return None if then is None else max(0.0, (now_ms - then) / 1000)
