"""``ops host list|pause|resume``: each receiving host's learned pace, and operators' pauses, over every shard.

A host's state lives in the shard its callbacks hash to (:mod:`worker.streams.host_book`): the leader
writes its ``hosts`` hash on every housekeeping pass and reads ``hosts:paused`` on every pass, so a
pause or a resume takes effect within about ``CALLBACK_MAX_DELAY``. Times: the hosts' records carry
the leaders' clocks; ``ops`` reads each shard's Redis clock to age them and to time a pause.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

import redis

from ops.shards import in_use
from worker.config.settings import Settings
from worker.engine import adaptive
from worker.errors import WorkerError
from worker.streams import host_book
from worker.streams.client import text
from worker.streams.keys import Keys
from worker.streams.protocol import Command, Operation, SyncDriver
from worker.streams.shards import DEFAULT_PORTS, MAX_SHARDS, host_port, shard_of
from worker.streams.snapshot import now_ms

MAX_TARGET_CHARS = 300  # a DNS name is at most 253 characters; a URL's path and query are dropped anyway
NOT_IN_HOSTS = "/?#@[] \\"  # characters a host of a URL cannot hold (brackets only around an IPv6 address)


class BadHost(WorkerError, ValueError):
    """A HOST argument that is neither ``host:port`` nor an http(s) URL (the message never echoes it)."""


def target(given: str) -> str:
    """``host:port`` as the worker keys a host: lower-case, with the scheme's default port for a URL.

    Accepts ``host:port`` (``[::1]:8080`` for IPv6) or ``http(s)://host[:port]/...``. The result is
    what :func:`worker.streams.shards.host_port` makes of the host's callback URLs, checked by
    running it back through that function.
    """
    if not given.isprintable() or not 0 < len(given) <= MAX_TARGET_CHARS:
        raise BadHost(f"must be 1 to {MAX_TARGET_CHARS} printable characters")
    if "://" in given:
        parts = urlsplit(given)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise BadHost("a URL must be http(s)://host[:port]/...")
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError:
            raise BadHost("the port must be 1..65535") from None
        host = parts.hostname
    else:
        host, sep, digits = given.rpartition(":")
        if not (sep and host and digits.isascii() and digits.isdigit() and len(digits) <= 5):
            raise BadHost("must be host:port (e.g. api.example.com:443) or an http(s) URL")
        port = int(digits)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
    host = host.lower()
    if not 0 < port < 65536:
        raise BadHost("the port must be 1..65535")
    name = f"{host}:{port}"
    if not host or any(c in NOT_IN_HOSTS for c in host) or host_port(url_of(name)) != name:
        raise BadHost("names no host a callback URL could have")
    return name


def url_of(name: str) -> str:
    """A URL whose ``host:port`` is ``name`` (the port explicit, so no scheme default applies)."""
    host, _, port = name.rpartition(":")
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def home_shards(client: redis.Redis, settings: Settings, name: str) -> list[Keys]:
    """The shards ``name``'s callbacks may be in: its shard under ``CALLBACK_SHARDS`` and under each count
    recorded in the namespace (more than one only while a changed count drains, or if one was never forgotten)."""
    keys = Keys(settings.namespace, settings.queue)
    members = SyncDriver(client).run(_recorded_counts(keys))
    counts = {settings.shards, *(count for count in members if 1 <= count <= MAX_SHARDS)}
    return [keys.of_shard(shard) for shard in sorted({shard_of(url_of(name), count) for count in counts})]


def _recorded_counts(keys: Keys) -> Operation[list[int]]:
    members = yield Command("smembers", (keys.shard_counts,))
    counts = [text(member) for member in members or ()]
    return [int(count) for count in counts if count.isascii() and count.isdigit() and len(count) <= 3]


def pause(client: redis.Redis, settings: Settings, name: str, seconds: float | None) -> dict[str, Any]:
    """Hold ``name`` for ``seconds`` (``None``: until resumed), timed on each of its shards' Redis clock."""
    driver = SyncDriver(client)
    shards = home_shards(client, settings, name)
    until = None
    for keys in shards:
        until_ms = 0 if seconds is None else driver.run(now_ms(keys)) + max(1, round(seconds * 1000))
        driver.run(host_book.pause(keys, name, until_ms))
        until = None if seconds is None else until_ms / 1000
    return {"host": name, "shards": [keys.shard for keys in shards], "for": seconds, "until": until}


def resume(client: redis.Redis, settings: Settings, name: str) -> dict[str, Any]:
    """Release ``name`` in every shard in use that holds a pause of it; ``resumed``: those shards (empty: none)."""
    driver = SyncDriver(client)
    resumed = [keys.shard for keys in in_use(client, settings) if driver.run(host_book.resume(keys, name))]
    return {"host": name, "shards": resumed, "resumed": bool(resumed)}


def listing(client: redis.Redis, settings: Settings, limit: int | None) -> dict[str, Any]:
    """Every host of every shard in use, the busiest first (waiting + in flight, then by name), at most
    ``limit``; hosts an operator paused that have no record yet are listed too. Ages and times left in s."""
    driver = SyncDriver(client)
    rows: list[dict[str, Any]] = []
    for keys in in_use(client, settings):
        now = driver.run(now_ms(keys)) / 1000
        records = {record.host: record for record in driver.run(host_book.load(keys))}
        paused = driver.run(host_book.pauses(keys))
        for name in records.keys() | {name for name, until in paused.items() if until > now}:  # not run out
            rows.append(row(keys.shard, name, records.get(name), paused.get(name), now))
    rows.sort(key=lambda r: (-(r["waiting"] + r["in_flight"]), r["host"], r["shard"]))
    shown = rows if not limit else rows[:limit]
    return {"hosts": shown, "total": len(rows), "more": len(rows) - len(shown)}


def row(shard: int, name: str, record: host_book.HostRecord | None, until: float | None, now: float) -> dict[str, Any]:
    """One host as listed. ``paused``: an operator's pause is on, for ``paused_for`` more seconds (``None``:
    until resumed). A host without a record (paused before its leader saw it) has ``None`` for what is
    learned, and loads of 0."""
    paused = until is not None and until > now
    listed: dict[str, Any] = {
        "host": name,
        "shard": shard,
        "paused": paused,
        "paused_for": until - now if paused and until is not None and until != math.inf else None,
        "in_flight": 0,
        "waiting": 0,
        "rate": None,
        "capacity": None,
        "circuit": None,
        "probe_in": None,
        "retry_after": 0.0,
        "last_status": None,
        "updated_age": None,
    }
    if record is not None:
        listed |= {
            "in_flight": record.in_flight,
            "waiting": record.waiting,
            "rate": record.rate or None,  # 0 is stored for a host paced by nothing
            "capacity": record.capacity or None,  # 0: never cut
            "circuit": record.circuit,
            "probe_in": max(0.0, record.probe_at - now) if record.circuit == adaptive.OPEN else None,
            "retry_after": max(0.0, record.paused_until - now),
            "last_status": record.last_status,
            "updated_age": max(0.0, now - record.updated),
        }
    return listed
