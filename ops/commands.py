"""Operator commands: each reads or repairs one queue's Redis state and returns a dict or dataclass.

Nothing here prints (``ops.render`` does). Ages are seconds on the Redis clock, the worker scripts' clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.exceptions import ResponseError

from ops.writer import writer_status
from worker.config.settings import Settings
from worker.streams.client import text
from worker.streams.entry import CallbackEntry
from worker.streams.keys import GROUP, Keys
from worker.streams.scripts import source
from worker.streams.settlement import Settlement
from worker.streams.status import StatusUpdate

RECOVER_CONSUMER = "ops-recover"
BATCH = 100
BODY_PREVIEW = 500
COUNTERS = ("delivered", "retried", "dead", "deferred", "handed_back")
Progress = Callable[[int, int], None]

# Inline because ops ships Python only; each keeps the KEYS/ARGV header of worker/streams/*.lua.
REPLAY_LUA = """-- KEYS[1] dead-letter stream, KEYS[2] callback stream; ARGV dead-letter ids. Returns how many moved.
-- Each goes back as a fresh callback: att=0, tq=now (ms, Redis clock), without reason/status/error/
-- dead_ms. An id already gone is skipped, so replays running at once never enqueue a letter twice.
local t = redis.call('TIME')
local now_ms = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local drop, moved = {att = true, tq = true, reason = true, status = true, error = true, dead_ms = true}, 0
for _, id in ipairs(ARGV) do
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if found[1] then
    local src, out = found[1][2], {'att', '0', 'tq', now_ms}
    for j = 1, #src, 2 do
      if not drop[src[j]] then out[#out + 1] = src[j]; out[#out + 1] = src[j + 1] end
    end
    redis.call('XADD', KEYS[2], '*', unpack(out))
    moved = moved + redis.call('XDEL', KEYS[1], id)
  end
end
return moved"""
FORGET_CONSUMER_LUA = """-- KEYS[1] callback stream; ARGV[1] group, ARGV[2] consumer. Returns 1 when deleted.
-- Deletes the consumer only while it has nothing pending (XGROUP DELCONSUMER discards pending entries).
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) + 1"""


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
    pipe: Any = client.pipeline(transaction=False)
    pipe.time().xlen(keys.stream).xrange(keys.stream, count=1).zcard(keys.delayed)
    pipe.zrange(keys.delayed, 0, 0, withscores=True).xlen(keys.dead).exists(keys.lease).pttl(keys.lease)
    pipe.hgetall(keys.lease_info).hgetall(keys.stats)
    (sec, usec), backlog, first, delayed, head, dead, held, pttl, info, stats = pipe.execute()
    now = int(sec) * 1000 + int(usec) // 1000
    info, stats, group = _decode(info), _decode(stats), _group(client, keys) or {}
    return {
        "namespace": settings.namespace,
        "queue": settings.queue,
        "backlog": int(backlog),
        "oldest_age": _age(now, text(first[0][0]).partition("-")[0]) if first else None,
        "group": bool(group),
        "pending": int(group.get("pending", 0)),
        "lag": None if group.get("lag") is None else int(group["lag"]),
        "consumers": _consumers(client, keys) if group else [],
        "delayed": int(delayed),
        "next_due": max(0.0, (head[0][1] - now) / 1000) if head else None,
        "dead": int(dead),
        "leader": {
            "held": bool(held),
            "holder": info.get("holder"),
            "epoch": int(info.get("epoch") or 0) or None,
            "age": _age(now, info.get("acquired_ms")),
            "since_renewal": _age(now, info.get("renewed_ms")),
            "ttl": int(pttl) / 1000 if int(pttl) >= 0 else None,
        },
        "counters": {name: int(stats.get(name, 0)) for name in (*COUNTERS, *stats) if name != "last_delivered_ms"},
        "last_send_ago": _age(now, stats.get("last_delivered_ms")),
        "writer": writer_status(client, keys),
    }


def recover(client: redis.Redis, settings: Settings, *, forget_idle: float | None = None) -> RecoverReport:
    """Repair what crashes leave behind, idempotently and safely while workers run.

    Promotes due retries, hands idle pending entries back to the stream's tail (poison ones to the dead
    letters), drops a stale lease and consumers with nothing pending idle ``forget_idle`` s (10 x claim idle).
    """
    keys, report = Keys(settings.namespace, settings.queue), RecoverReport()
    promote, limit = client.register_script(source("promote")), settings.batch_size * 10
    moved = limit
    while moved >= limit:  # the script moves at most ``limit`` per call
        report.promoted += (moved := int(promote(keys=[keys.delayed, keys.stream], args=[limit])[0]))
    group = _group(client, keys) is not None
    if group:
        _hand_back(client, settings, keys, report)
    report.stale_lease = _remove_stale_lease(client, settings, keys)
    forget = client.register_script(FORGET_CONSUMER_LUA)
    threshold = 10 * settings.claim_idle if forget_idle is None else forget_idle
    for consumer in _consumers(client, keys) if group else []:
        idle_enough = consumer["pending"] == 0 and consumer["idle"] >= threshold
        if idle_enough and forget(keys=[keys.stream], args=[GROUP, consumer["name"]]):
            report.consumers_removed.append(consumer["name"])
    return report


def unlock(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """Delete the leader lease, whoever holds it: ``{released, holder, epoch}``."""
    keys = Keys(settings.namespace, settings.queue)
    pipe: Any = client.pipeline(transaction=True)
    raw, deleted = pipe.hgetall(keys.lease_info).delete(keys.lease).execute()
    info = _decode(raw)
    return {"released": bool(deleted), "holder": info.get("holder"), "epoch": int(info.get("epoch") or 0) or None}


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
    """Send matching dead letters back to the stream with attempts reset: ``{matched, replayed, dry_run}``.

    ``matched`` holds each letter's fields but the body, plus ``stream_id`` and ``dead_age``.
    """
    keys, now = Keys(settings.namespace, settings.queue), _now_ms(client)
    letters = (_dead_letter(sid, fields, now) for sid, fields in _entries(client, keys.dead))
    matched = list(islice((letter for letter in letters if selection.matches(letter)), selection.limit))
    script, replayed = client.register_script(REPLAY_LUA), 0
    for start in range(0, 0 if dry_run else len(matched), BATCH):
        batch = [letter["stream_id"] for letter in matched[start : start + BATCH]]
        replayed += int(script(keys=[keys.dead, keys.stream], args=batch))
        if progress:
            progress(min(start + BATCH, len(matched)), len(matched))
    return {"matched": matched, "replayed": replayed, "dry_run": dry_run}


def inspect(client: redis.Redis, settings: Settings, query: str) -> list[dict[str, Any]]:
    """Where a callback id (``msg_...``) or stream id is: ``[{place, stream_id, fields, ...}]``, empty if nowhere.

    ``place``: ``stream`` (+ ``consumer``, ``deliveries`` if pending), ``delayed`` (+ ``due_in``) or ``dead``.
    """
    keys, by_id = Keys(settings.namespace, settings.queue), re.fullmatch(r"\d+(-\d+)?", query) is not None
    found: list[dict[str, Any]] = []
    for place, key in (("stream", keys.stream), ("dead", keys.dead)):  # a scan: a one-off question, not a hot path
        rows = _entries(client, key, query, query) if by_id else _entries(client, key)
        found += [_sighting(place, sid, f) for sid, f in rows if by_id or f.get("cid") == query]
    now, pattern = _now_ms(client), '*"cid":' + re.sub(r"([*?\[\]\\])", r"\\\1", json.dumps(query)) + "*"
    for member, score in [] if by_id else client.zscan_iter(keys.delayed, match=pattern, count=1000):
        fields = {key: str(value) for key, value in json.loads(member).items()}
        if fields.get("cid") == query:
            found.append(_sighting("delayed", None, fields, due_in=(float(score) - now) / 1000))
    for sighting in [s for s in found if s["place"] == "stream"] if _group(client, keys) else []:
        pending: Any = client.xpending_range(keys.stream, GROUP, sighting["stream_id"], sighting["stream_id"], 1)
        for row in pending:
            sighting.update(consumer=text(row["consumer"]), deliveries=int(row["times_delivered"]))
    return found


def _hand_back(client: redis.Redis, settings: Settings, keys: Keys, report: RecoverReport) -> None:
    settle, cursor, limit = client.register_script(source("settle")), "0-0", settings.max_deliveries
    settle_keys = [keys.stream, keys.delayed, keys.dead, keys.stats, keys.status_updates]
    while True:
        reply: Any = client.xautoclaim(keys.stream, GROUP, RECOVER_CONSUMER, int(settings.claim_idle * 1000), cursor)
        cursor, settlement, now = text(reply[0]), Settlement(), _now_ms(client)
        entries = [CallbackEntry.from_fields(text(sid), f) for sid, f in reply[1] if sid is not None and f]
        ids = [entry.stream_id or "" for entry in entries] or ["0-0"]
        rows: Any = client.xpending_range(keys.stream, GROUP, ids[0], ids[-1], len(ids), RECOVER_CONSUMER)
        times = {text(row["message_id"]): int(row["times_delivered"]) for row in rows}
        for entry in entries:  # a copy at the tail starts a fresh delivery count: apply the poison rule here
            if (read := times.get(entry.stream_id or "", 1)) > limit:
                reason = f"poison: read {read} times without being settled (CALLBACK_MAX_DELIVERIES={limit})"
                settlement.dead(entry, {"reason": reason, "status": "", "error": "", "dead_ms": str(now)})
                settlement.record(
                    [StatusUpdate("callbacks", entry.callback_id, now, {"status": "dead", "last_error": reason})]
                )
                report.dead_lettered += 1
            else:
                settlement.again(entry)
                report.handed_back += 1
        if not settlement.empty:
            settle(keys=settle_keys, args=[GROUP, *settlement.script_args()])
        if cursor == "0-0":
            break
    client.register_script(FORGET_CONSUMER_LUA)(keys=[keys.stream], args=[GROUP, RECOVER_CONSUMER])


def _remove_stale_lease(client: redis.Redis, settings: Settings, keys: Keys) -> str | None:
    def check(pipe: Any) -> str | None:  # runs under WATCH: a renewal meanwhile (renewed_ms) aborts the DEL
        info = _decode(pipe.hgetall(keys.lease_info))
        silent = _age(_now_ms(pipe), info.get("renewed_ms"))
        if not pipe.exists(keys.lease) or silent is None or silent <= settings.lease_ttl:
            return None
        pipe.multi()
        pipe.delete(keys.lease)
        return info.get("holder", "?")

    holder: Any = client.transaction(check, keys.lease, keys.lease_info, value_from_callable=True)  # type: ignore[arg-type]
    return holder  # type: ignore[no-any-return]


def _xinfo(call: Callable[..., Any], *args: str) -> Any:
    try:
        return call(*args)
    except ResponseError:  # no stream or group yet (or an ops reset meanwhile)
        return []


def _group(client: redis.Redis, keys: Keys) -> dict[str, Any] | None:
    return next((g for g in _xinfo(client.xinfo_groups, keys.stream) if text(g["name"]) == GROUP), None)


def _consumers(client: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    rows = _xinfo(client.xinfo_consumers, keys.stream, GROUP)
    return [{"name": text(r["name"]), "pending": int(r["pending"]), "idle": int(r["idle"]) / 1000} for r in rows]


def _entries(client: redis.Redis, key: str, low: str = "-", high: str = "+") -> Iterator[tuple[str, dict[str, str]]]:
    while rows := client.xrange(key, low, high, count=500):  # type: ignore[union-attr]
        yield from ((text(sid), _decode(fields)) for sid, fields in rows)
        low = "(" + text(rows[-1][0])


def _dead_letter(stream_id: str, fields: dict[str, str], now_ms: int) -> dict[str, Any]:
    age = _age(now_ms, fields.get("dead_ms") or stream_id.partition("-")[0])
    return {"stream_id": stream_id, "dead_age": age, **{k: v for k, v in fields.items() if k != "body"}}


def _sighting(place: str, stream_id: str | None, fields: dict[str, str], **extra: Any) -> dict[str, Any]:
    body = fields.get("body", "")
    if len(body) > BODY_PREVIEW:
        fields = {**fields, "body": f"{body[:BODY_PREVIEW]}... ({len(body)} chars)"}
    return {"place": place, "stream_id": stream_id, "fields": fields, **extra}


def _now_ms(client: Any) -> int:
    sec, usec = client.time()
    return int(sec) * 1000 + int(usec) // 1000


def _age(now_ms: int, then_ms: str | None) -> float | None:
    return None if not then_ms else max(0.0, (now_ms - int(then_ms)) / 1000)


def _decode(raw: Any) -> dict[str, str]:
    return {text(k): text(v) for k, v in (raw or {}).items()}
