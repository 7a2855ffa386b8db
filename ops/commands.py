"""Operator commands: each reads or repairs one queue's Redis state and returns a dict or dataclass.

Nothing here prints (``ops.render`` does). Ages are seconds on the Redis clock, the worker scripts' clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any
from urllib.parse import urlsplit

import redis

from ops.writer import writer_status
from worker.config.settings import Settings
from worker.delivery.targets import describe
from worker.engine.attempt import record_poison
from worker.streams.client import texts
from worker.streams.entry import past_generations
from worker.streams.keys import Keys
from worker.streams.lease import lapsed
from worker.streams.stream import SyncCallbackStream

RECOVER_CONSUMER = "ops-recover"
BATCH = 100
COUNTERS = ("delivered", "retried", "dead", "deferred", "handed_back")
Progress = Callable[[int, int], None]


@dataclass
class RecoverReport:
    """What ``recover`` changed; all zero or empty when there was nothing to do."""

    promoted: int = 0
    handed_back: int = 0
    dead_lettered: int = 0
    stale_lease: str | None = None
    consumers_removed: list[str] = field(default_factory=list)


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
    """The queue's state on one screen; on a fresh namespace: zeros, ``None`` ages, no leader."""
    keys = Keys(settings.namespace, settings.queue)
    state = SyncCallbackStream(client, keys).state()
    now, info, stats, group = state.now_ms, state.lease_info, state.stats, state.group
    return {
        "namespace": settings.namespace,
        "queue": settings.queue,
        "backlog": state.length,
        "oldest_age": _age(now, state.oldest_ms),
        "group": group is not None,
        "pending": group.pending if group else 0,
        "lag": group.lag if group else None,
        "consumers": [asdict(consumer) for consumer in state.consumers],
        "delayed": state.delayed,
        "next_due": None if state.next_due_ms is None else max(0.0, (state.next_due_ms - now) / 1000),
        "dead": state.dead,
        "leader": {
            "held": state.lease_held,
            "holder": info.get("holder"),
            "epoch": _count(info.get("epoch")) or None,
            "age": _age(now, info.get("acquired_ms")),
            "since_renewal": _age(now, info.get("renewed_ms")),
            "ttl": state.lease_ttl_ms / 1000 if state.lease_ttl_ms >= 0 else None,
        },
        "counters": {
            name: _count(stats.get(name, 0)) or 0 for name in (*COUNTERS, *stats) if name != "last_delivered_ms"
        },
        "last_send_ago": _age(now, stats.get("last_delivered_ms")),
        "writer": writer_status(client, keys),
    }


def recover(client: redis.Redis, settings: Settings, *, forget_idle: float | None = None) -> RecoverReport:
    """Repair what crashes leave behind, idempotently and safely while workers run.

    Promotes due retries, hands idle pending entries back to the stream's tail (poison ones to the dead
    letters), drops a stale lease and consumers with nothing pending idle ``forget_idle`` s (10 x claim idle).
    """
    keys = Keys(settings.namespace, settings.queue)
    stream, report = SyncCallbackStream(client, keys), RecoverReport()
    report.promoted = stream.promote_all(settings.batch_size * 10)
    group = stream.group() is not None
    if group:
        handed = stream.hand_back(RECOVER_CONSUMER, settings.claim_idle, settings.max_deliveries, record_poison)
        report.handed_back, report.dead_lettered = handed.handed_back, handed.dead_lettered
    report.stale_lease = _remove_stale_lease(client, settings, keys)
    if group:
        threshold = 10 * settings.claim_idle if forget_idle is None else forget_idle
        report.consumers_removed = stream.forget_idle_consumers(threshold)
    return report


def unlock(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """Delete the leader lease, whoever holds it: ``{released, holder, epoch}``."""
    keys = Keys(settings.namespace, settings.queue)
    pipe: Any = client.pipeline(transaction=True)
    raw, deleted = pipe.hgetall(keys.lease_info).delete(keys.lease).execute()
    info = texts(raw)
    return {"released": bool(deleted), "holder": info.get("holder"), "epoch": _count(info.get("epoch")) or None}


def reset(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """Delete every key of the namespace (SCAN by ``Keys.all_patterns()``, never FLUSHDB): ``{deleted, patterns}``."""
    patterns = list(Keys(settings.namespace, settings.queue).all_patterns())
    deleted = 0
    for pattern in patterns:
        found = client.scan_iter(match=pattern, count=1000)
        while batch := list(islice(found, 500)):
            deleted += int(client.delete(*batch))  # type: ignore[arg-type]
    return {"deleted": deleted, "patterns": patterns}


def replay(
    client: redis.Redis, settings: Settings, selection: ReplayFilter, *, dry_run: bool, progress: Progress | None = None
) -> dict[str, Any]:
    """Send matching dead letters back to the stream as their callbacks' next generation, attempts reset.

    Returns ``{matched, replayed, dry_run}``; ``matched`` holds each letter's fields as :func:`shown`,
    plus ``stream_id`` and ``dead_age``. Each letter's record stays in its callback's history (``inspect``).
    """
    stream = SyncCallbackStream(client, Keys(settings.namespace, settings.queue))
    now = stream.now_ms()
    letters = (_dead_letter(sid, fields, now) for sid, fields in stream.entries(stream.keys.dead))
    matched = [shown(letter) for letter in islice(filter(selection.matches, letters), selection.limit)]
    replayed = 0
    for start in range(0, 0 if dry_run else len(matched), BATCH):
        replayed += stream.replay([letter["stream_id"] for letter in matched[start : start + BATCH]])
        if progress:
            progress(min(start + BATCH, len(matched)), len(matched))
    return {"matched": matched, "replayed": replayed, "dry_run": dry_run}


def inspect(client: redis.Redis, settings: Settings, query: str) -> list[dict[str, Any]]:
    """Where a callback id (``msg_...``) or stream id is: ``[{place, stream_id, fields, ...}]``, empty if nowhere.

    ``place``: ``stream`` (+ ``consumer``, ``deliveries`` if pending), ``delayed`` (+ ``due_in``) or ``dead``.
    Each sighting also has the callback's ``generation`` (replays so far) and ``history``: the dead-letter
    records of its earlier generations, oldest first (a dead letter's own record is in its ``fields``).
    """
    stream = SyncCallbackStream(client, Keys(settings.namespace, settings.queue))
    by_id = re.fullmatch(r"\d+(-\d+)?", query) is not None
    found: list[dict[str, Any]] = []
    now = stream.now_ms()
    for place, key in (("stream", stream.keys.stream), ("dead", stream.keys.dead)):  # a scan: a one-off question
        rows = stream.entries(key, query, query) if by_id else stream.entries(key)
        found += [_sighting(place, sid, f, now) for sid, f in rows if by_id or f.get("cid") == query]
    for fields, due_ms in [] if by_id else stream.delayed_with(query):
        found.append(_sighting("delayed", None, fields, now, due_in=(due_ms - now) / 1000))
    for sighting in [s for s in found if s["place"] == "stream"] if stream.group() else []:
        if held := stream.pending_entry(sighting["stream_id"]):
            sighting.update(consumer=held.consumer, deliveries=held.deliveries)
    return found


def _remove_stale_lease(client: redis.Redis, settings: Settings, keys: Keys) -> str | None:
    def check(pipe: Any) -> str | None:  # runs under WATCH: a renewal meanwhile (renewed_ms) aborts the DEL
        info = texts(pipe.hgetall(keys.lease_info))
        renewed = (_count(info.get("renewed_ms")) or 0) / 1000
        stale = renewed > 0 and lapsed(renewed, _now_ms(pipe) / 1000, settings.lease_ttl)
        if not stale or not pipe.exists(keys.lease):
            return None
        pipe.multi()
        pipe.delete(keys.lease)
        return info.get("holder", "?")

    holder: Any = client.transaction(check, keys.lease, keys.lease_info, value_from_callable=True)  # type: ignore[arg-type]
    return holder  # type: ignore[no-any-return]


def _dead_letter(stream_id: str, fields: dict[str, str], now_ms: int) -> dict[str, Any]:
    age = _age(now_ms, fields.get("dead_ms"))
    if age is None:  # no (or no readable) time of death: the letter's stream id says when it was added
        age = _age(now_ms, stream_id.partition("-")[0])
    return {"stream_id": stream_id, "dead_age": age, **{k: v for k, v in fields.items() if k != "body"}}


def _sighting(place: str, stream_id: str | None, fields: dict[str, str], now_ms: int, **extra: Any) -> dict[str, Any]:
    sighting = {"place": place, "stream_id": stream_id, "fields": shown(fields), **extra}
    sighting["generation"] = _count(fields.get("gen", "0"))
    sighting["history"] = [_past(record, now_ms) for record in past_generations(fields.get("hist"))]
    return sighting


def _past(record: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """One earlier generation as ``inspect`` returns it (a record of ``entry.replay_of``, from Redis: checked)."""
    dead_ms, replayed_ms = _count(record.get("dead_ms")), _count(record.get("replayed_ms"))
    return {
        "generation": _count(record.get("gen")),
        "attempts": _count(record.get("att")),
        **{name: str(record.get(name, "")) for name in ("reason", "status", "error")},
        "dead_age": _age(now_ms, dead_ms),
        "replayed_age": _age(now_ms, replayed_ms),
    }


def _count(value: Any) -> int | None:
    """A non-negative integer (or its digits) as read from Redis; ``None`` for anything else."""
    if isinstance(value, str) and 0 < len(value) <= 16 and value.isascii() and value.isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


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


def _age(now_ms: int, then_ms: str | int | None) -> float | None:
    """Seconds since ``then_ms``; ``None`` when it is missing or not a time (whatever wrote it)."""
    then = _count(then_ms)
    return None if then is None else max(0.0, (now_ms - then) / 1000)
