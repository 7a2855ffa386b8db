"""Operator commands: each reads or repairs one queue's Redis state and returns a dict or dataclass.

Every command covers every shard that may hold work (:func:`ops.shards.in_use`), one shard at a time:
no command or MULTI spans two shards' keys (Redis Cluster slots). Nothing here prints (``ops.render``
does). Ages are seconds on the Redis clock, the worker scripts' clock.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import groupby, islice
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.crc import key_slot

from ops.shards import age, count, fleet, in_use, one_of, shard_status, totals
from ops.writer import writer_status
from worker.config.settings import Settings
from worker.delivery.targets import describe
from worker.engine.attempt import record_poison
from worker.streams.client import texts
from worker.streams.entry import past_generations
from worker.streams.groups import id_order
from worker.streams.keys import Keys
from worker.streams.lease import lapsed
from worker.streams.stream import SyncCallbackStream

RECOVER_CONSUMER = "ops-recover"
BATCH = 100
Progress = Callable[[int, int], None]


@dataclass
class RecoverReport:
    """What ``recover`` changed, summed over its ``shards``; all zero or empty when there was nothing to do.

    ``stale_leases``: ``[{shard, holder}]`` of each lease removed; ``stale_lease`` is shard 0's holder (as
    before shards). A consumer removed from a shard other than 0 is named ``<shard label>/<name>``.
    """

    promoted: int = 0
    handed_back: int = 0
    dead_lettered: int = 0
    stale_lease: str | None = None
    consumers_removed: list[str] = field(default_factory=list)
    stale_leases: list[dict[str, Any]] = field(default_factory=list)
    shards: int = 1


@dataclass(frozen=True)
class ReplayFilter:
    """Which dead letters to replay; ``None`` means any. Ages are seconds since dead-lettering."""

    reason: str | None = None
    host: str | None = None
    older_than: float | None = None
    newer_than: float | None = None
    limit: int | None = None

    def matches(self, letter: dict[str, Any]) -> bool:
        """Whether ``letter`` (see :func:`replay`) passes every filter set; reason: case-insensitive substring."""
        url = urlsplit(letter.get("url", ""))
        return (
            (self.reason is None or self.reason.lower() in letter.get("reason", "").lower())
            and (self.host is None or self.host.lower() in (url.hostname, url.netloc.lower()))
            and (self.older_than is None or letter["dead_age"] >= self.older_than)
            and (self.newer_than is None or letter["dead_age"] <= self.newer_than)
        )


def status(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """The queue's state on one screen, summed over its shards, each shard's own in ``shards``.

    On a fresh namespace: zeros, ``None`` ages, no leader. ``leader`` is shard 0's (as before shards),
    ``leaders`` says how many shards have one; ``fleet`` lists the live worker processes.
    """
    shards = in_use(client, settings)
    each = [shard_status(client, keys, settings.shards) for keys in shards]
    return {
        "namespace": settings.namespace,
        "queue": settings.queue,
        **totals(each),
        "leader": each[0]["leader"],
        "leaders": {"led": sum(shard["leader"]["held"] for shard in each), "of": len(each)},
        "configured_shards": settings.shards,
        "shards": [{name: value for name, value in shard.items() if name != "consumers"} for shard in each],
        "fleet": fleet(client, shards[0]),
        "writer": writer_status(client, shards),
    }


def recover(client: redis.Redis, settings: Settings, *, forget_idle: float | None = None) -> RecoverReport:
    """Repair what crashes leave behind in every shard, idempotently and safely while workers run.

    Promotes due retries, hands idle pending entries back to the stream's tail (poison ones to the dead
    letters), drops a stale lease and consumers with nothing pending idle ``forget_idle`` s (10 x claim idle).
    """
    shards = in_use(client, settings)
    report = RecoverReport(shards=len(shards))
    for keys in shards:
        stream = SyncCallbackStream(client, keys)
        report.promoted += stream.promote_all(settings.batch_size * 10)
        group = stream.group() is not None
        if group:
            handed = stream.hand_back(RECOVER_CONSUMER, settings.claim_idle, settings.max_deliveries, record_poison)
            report.handed_back += handed.handed_back
            report.dead_lettered += handed.dead_lettered
        if (holder := _remove_stale_lease(client, settings, keys)) is not None:
            report.stale_leases.append({"shard": keys.shard, "holder": holder})
            if keys.shard == 0:
                report.stale_lease = holder
        if group:
            threshold = 10 * settings.claim_idle if forget_idle is None else forget_idle
            removed = stream.forget_idle_consumers(threshold)
            report.consumers_removed += [name if keys.shard == 0 else f"{keys.label}/{name}" for name in removed]
    return report


def unlock(client: redis.Redis, settings: Settings, shard: int | None = None) -> dict[str, Any]:
    """Delete the leader lease of shard ``shard`` (or of every shard), whoever holds it.

    ``{released, holder, epoch, shards: [{shard, released, holder, epoch}]}``: ``released`` if any was,
    ``holder`` and ``epoch`` those of the first shard listed (shard 0, or ``shard``).
    """
    each = []
    for keys in one_of(in_use(client, settings), shard):
        pipe: Any = client.pipeline(transaction=True)  # one shard's two keys: one slot
        raw, deleted = pipe.hgetall(keys.lease_info).delete(keys.lease).execute()
        info = texts(raw)
        epoch = count(info.get("epoch")) or None
        each.append({"shard": keys.shard, "released": bool(deleted), "holder": info.get("holder"), "epoch": epoch})
    released = any(lease["released"] for lease in each)
    return {"released": released, "holder": each[0]["holder"], "epoch": each[0]["epoch"], "shards": each}


def reset(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """Delete every key of the namespace, every shard's (SCAN by ``Keys.all_patterns()``, never FLUSHDB).

    ``{deleted, patterns}``; each DEL names keys of one Cluster slot only.
    """
    patterns = list(Keys(settings.namespace, settings.queue).all_patterns())
    deleted = 0
    for pattern in patterns:
        found = client.scan_iter(match=pattern, count=1000)
        while batch := list(islice(found, 500)):
            for same_slot in _by_slot(batch):
                deleted += int(client.delete(*same_slot))  # type: ignore[arg-type]
    return {"deleted": deleted, "patterns": patterns}


def replay(
    client: redis.Redis, settings: Settings, selection: ReplayFilter, *, dry_run: bool, progress: Progress | None = None
) -> dict[str, Any]:
    """Send matching dead letters back, each to its shard's stream, as their callbacks' next generation.

    Attempts are reset. The dead letters of every shard are matched oldest first (``limit`` counts them
    all). Returns ``{matched, replayed, dry_run}``; ``matched`` holds each letter's fields as :func:`shown`,
    plus ``shard``, ``stream_id`` and ``dead_age``. Each letter's record stays in its callback's history.
    """
    streams = [SyncCallbackStream(client, keys) for keys in in_use(client, settings)]
    now = streams[0].now_ms()
    each = (_dead_letters(stream, now) for stream in streams)
    letters = heapq.merge(*each, key=lambda letter: id_order(letter["stream_id"]))  # oldest first across shards
    matched = [shown(letter) for letter in islice(filter(selection.matches, letters), selection.limit)]
    replayed = done = 0
    by_shard = groupby(sorted(matched, key=lambda letter: letter["shard"]), key=lambda letter: letter["shard"])
    for shard, group in [] if dry_run else by_shard:
        ids = [letter["stream_id"] for letter in group]
        for start in range(0, len(ids), BATCH):
            replayed += streams[shard].replay(ids[start : start + BATCH])
            done += len(ids[start : start + BATCH])
            if progress:
                progress(done, len(matched))
    return {"matched": matched, "replayed": replayed, "dry_run": dry_run}


def inspect(client: redis.Redis, settings: Settings, query: str) -> list[dict[str, Any]]:
    """Where a callback id (``msg_...``) or stream id is, in every shard: ``[{shard, place, stream_id, fields, ...}]``.

    Empty if nowhere. ``place``: ``stream`` (+ ``consumer``, ``deliveries`` if pending), ``delayed``
    (+ ``due_in``) or ``dead``. Each sighting also has the callback's ``generation`` (replays so far)
    and ``history``: the dead-letter records of its earlier generations, oldest first (a dead letter's
    own record is in its ``fields``).
    """
    return [found for keys in in_use(client, settings) for found in _sightings(SyncCallbackStream(client, keys), query)]


def _sightings(stream: SyncCallbackStream, query: str) -> list[dict[str, Any]]:
    """:func:`inspect` in one shard."""
    by_id = re.fullmatch(r"\d+(-\d+)?", query) is not None
    found: list[dict[str, Any]] = []
    now, shard = stream.now_ms(), stream.keys.shard
    for place, key in (("stream", stream.keys.stream), ("dead", stream.keys.dead)):  # a scan: a one-off question
        rows = stream.entries(key, query, query) if by_id else stream.entries(key)
        found += [_sighting(shard, place, sid, f, now) for sid, f in rows if by_id or f.get("cid") == query]
    for fields, due_ms in [] if by_id else stream.delayed_with(query):
        found.append(_sighting(shard, "delayed", None, fields, now, due_in=(due_ms - now) / 1000))
    for sighting in [s for s in found if s["place"] == "stream"] if stream.group() else []:
        if held := stream.pending_entry(sighting["stream_id"]):
            sighting.update(consumer=held.consumer, deliveries=held.deliveries)
    return found


def _by_slot(names: list[Any]) -> list[list[Any]]:
    """``names`` grouped by Redis Cluster slot (one per hash tag), in order of first appearance."""
    slots: dict[int, list[Any]] = {}
    for name in names:
        slots.setdefault(key_slot(name if isinstance(name, bytes) else str(name).encode()), []).append(name)
    return list(slots.values())


def _remove_stale_lease(client: redis.Redis, settings: Settings, keys: Keys) -> str | None:
    def check(pipe: Any) -> str | None:  # runs under WATCH: a renewal meanwhile (renewed_ms) aborts the DEL
        info = texts(pipe.hgetall(keys.lease_info))
        renewed = (count(info.get("renewed_ms")) or 0) / 1000
        stale = renewed > 0 and lapsed(renewed, _now_ms(pipe) / 1000, settings.lease_ttl)
        if not stale or not pipe.exists(keys.lease):
            return None
        pipe.multi()
        pipe.delete(keys.lease)
        return info.get("holder", "?")

    holder: Any = client.transaction(check, keys.lease, keys.lease_info, value_from_callable=True)  # type: ignore[arg-type]
    return holder  # type: ignore[no-any-return]


def _dead_letters(stream: SyncCallbackStream, now_ms: int) -> Iterator[dict[str, Any]]:
    """One shard's dead letters, oldest first, as :func:`replay` matches them."""
    for stream_id, fields in stream.entries(stream.keys.dead):
        dead_age = age(now_ms, fields.get("dead_ms"))
        if dead_age is None:  # no (or no readable) time of death: the letter's stream id says when it was added
            dead_age = age(now_ms, stream_id.partition("-")[0])
        kept = {k: v for k, v in fields.items() if k != "body"}  # our names last: a field cannot pose as one
        yield {**kept, "shard": stream.keys.shard, "stream_id": stream_id, "dead_age": dead_age}


def _sighting(
    shard: int, place: str, stream_id: str | None, fields: dict[str, str], now_ms: int, **extra: Any
) -> dict[str, Any]:
    sighting = {"shard": shard, "place": place, "stream_id": stream_id, "fields": shown(fields), **extra}
    sighting["generation"] = count(fields.get("gen", "0"))
    sighting["history"] = [_past(record, now_ms) for record in past_generations(fields.get("hist"))]
    return sighting


def _past(record: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """One earlier generation as ``inspect`` returns it (a record of ``entry.replay_of``, from Redis: checked)."""
    dead_ms, replayed_ms = count(record.get("dead_ms")), count(record.get("replayed_ms"))
    return {
        "generation": count(record.get("gen")),
        "attempts": count(record.get("att")),
        **{name: str(record.get(name, "")) for name in ("reason", "status", "error")},
        "dead_age": age(now_ms, dead_ms),
        "replayed_age": age(now_ms, replayed_ms),
    }


def shown(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields as ``ops`` may print them: URLs as ``scheme://host:port/…``, bodies by their size only."""
    out = dict(fields)
    for name in ("url", "raw.url"):
        if name in out:
            out[name] = describe(out[name])
    for name in ("body", "raw.body"):
        if name in out:
            out[name] = f"(not shown: {len(out[name])} chars)"
    if "hist" in out:  # the records of its earlier generations, one line (``inspect`` returns them whole)
        past = past_generations(out["hist"])
        out["hist"] = "; ".join(f"generation {r.get('gen')} dead: {r.get('reason')}" for r in past) or out["hist"]
    return out


def _now_ms(client: Any) -> int:
    sec, usec = client.time()
    return int(sec) * 1000 + int(usec) // 1000
