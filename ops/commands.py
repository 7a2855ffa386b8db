"""Operator commands as plain functions: each reads or repairs one queue's Redis state and returns a result.

Results are dicts (JSON-ready) or small dataclasses; nothing here prints (``ops.render`` does). Ages are
seconds on the Redis clock (``TIME``), the clock the worker's scripts stamp entries with.
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
from redis.exceptions import ResponseError, WatchError

from worker.keys import GROUP, Keys
from worker.settings import Settings
from worker.streams.entry import CallbackEntry
from worker.streams.scripts import source
from worker.streams.stream import Settlement

RECOVER_CONSUMER = "ops-recover"
BATCH = 100
BODY_PREVIEW = 500
COUNTERS = ("delivered", "retried", "dead", "deferred", "handed_back")
Progress = Callable[[int, int], None]

# Inline because ops ships Python only; each keeps the KEYS/ARGV header of worker/streams/*.lua.
REPLAY_LUA = """
-- Move dead letters back to the stream as fresh callbacks: att=0, tq=now (ms, Redis clock), without
-- reason/status/error/dead_ms. An id already gone is skipped, so concurrent replays never double one.
-- KEYS[1] dead-letter stream, KEYS[2] callback stream; ARGV dead-letter ids. Returns how many moved.
local t = redis.call('TIME')
local now_ms = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local drop = {att = true, tq = true, reason = true, status = true, error = true, dead_ms = true}
local moved = 0
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
return moved
"""
FORGET_CONSUMER_LUA = """
-- Delete a consumer only while it has nothing pending (XGROUP DELCONSUMER discards pending entries).
-- KEYS[1] callback stream; ARGV[1] group, ARGV[2] consumer. Returns 1 when deleted.
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


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
        url = urlsplit(letter["url"])
        return (
            (self.reason is None or self.reason.lower() in letter["reason"].lower())
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
    (sec, usec), backlog, first, delayed, head, dead, held, pttl, info, stats = (
        pipe.hgetall(keys.lease_info).hgetall(keys.stats).execute()
    )
    now = int(sec) * 1000 + int(usec) // 1000
    info, stats, group = _decode(info), _decode(stats), _group(client, keys) or {}
    return {
        "namespace": settings.namespace,
        "queue": settings.queue,
        "backlog": int(backlog),
        "oldest_age": _age(now, _text(first[0][0]).partition("-")[0]) if first else None,
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
            "epoch": int(info["epoch"]) if "epoch" in info else None,
            "age": _age(now, info.get("acquired_ms")),
            "since_renewal": _age(now, info.get("renewed_ms")),
            "ttl": int(pttl) / 1000 if int(pttl) >= 0 else None,
        },
        "counters": {name: int(stats.get(name, 0)) for name in (*COUNTERS, *stats) if name != "last_delivered_ms"},
        "last_send_ago": _age(now, stats.get("last_delivered_ms")),
    }


def recover(client: redis.Redis, settings: Settings, *, forget_idle: float | None = None) -> RecoverReport:
    """Repair what crashes leave behind; idempotent and safe while workers run.

    Promotes due retries; hands entries idle past the claim idle time back to the stream's tail (poison
    ones to the dead letters); removes a lease whose holder stopped renewing; deletes consumers with
    nothing pending, idle ``forget_idle`` seconds (default 10 x claim idle).
    """
    keys = Keys(settings.namespace, settings.queue)
    report = RecoverReport()
    promote, limit = client.register_script(source("promote")), settings.batch_size * 10
    while True:
        report.promoted += (moved := int(promote(keys=[keys.delayed, keys.stream], args=[limit])[0]))
        if moved < limit:
            break
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
    info, deleted = pipe.hgetall(keys.lease_info).delete(keys.lease).execute()
    info = _decode(info)
    return {"released": bool(deleted), "holder": info.get("holder"), "epoch": info.get("epoch")}


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

    ``matched`` lists ``{stream_id, callback_id, url, reason, attempts, dead_age}``; ``progress(done,
    total)`` is called after each batch.
    """
    keys = Keys(settings.namespace, settings.queue)
    now = _now_ms(client)
    letters = (_dead_letter(sid, fields, now) for sid, fields in _entries(client, keys.dead))
    matched = list(islice((letter for letter in letters if selection.matches(letter)), selection.limit))
    script, replayed = client.register_script(REPLAY_LUA), 0
    for start in range(0, 0 if dry_run else len(matched), BATCH):
        replayed += int(
            script(keys=[keys.dead, keys.stream], args=[m["stream_id"] for m in matched[start : start + BATCH]])
        )
        if progress:
            progress(min(start + BATCH, len(matched)), len(matched))
    return {"matched": matched, "replayed": replayed, "dry_run": dry_run}


def inspect(client: redis.Redis, settings: Settings, query: str) -> list[dict[str, Any]]:
    """Where a callback id (``msg_...``) or stream id is: ``[{place, stream_id, fields, ...}]``, empty if nowhere.

    ``place`` is ``stream`` (with ``consumer`` and ``deliveries`` when pending), ``delayed`` (with
    ``due_in`` seconds) or ``dead``; the body is cut to 500 characters.
    """
    keys = Keys(settings.namespace, settings.queue)
    by_id = re.fullmatch(r"\d+(-\d+)?", query) is not None
    found: list[dict[str, Any]] = []
    for place, key in (("stream", keys.stream), ("dead", keys.dead)):  # a scan: a one-off question, not a hot path
        rows = _entries(client, key, query, query) if by_id else _entries(client, key)
        found += [_sighting(place, sid, f) for sid, f in rows if by_id or f.get("cid") == query]
    now, pattern = _now_ms(client), '*"cid":' + re.sub(r"([*?\[\]\\])", r"\\\1", json.dumps(query)) + "*"
    for member, score in [] if by_id else client.zscan_iter(keys.delayed, match=pattern, count=1000):
        fields = {key: str(value) for key, value in json.loads(member).items()}
        if fields.get("cid") == query:
            found.append(_sighting("delayed", None, fields, due_in=(float(score) - now) / 1000))
    for sighting in found if _group(client, keys) else []:
        sid = sighting["stream_id"]
        pending: Any = client.xpending_range(keys.stream, GROUP, sid, sid, 1) if sighting["place"] == "stream" else []
        for row in pending:
            sighting.update(consumer=_text(row["consumer"]), deliveries=int(row["times_delivered"]))
    return found


def _hand_back(client: redis.Redis, settings: Settings, keys: Keys, report: RecoverReport) -> None:
    settle, cursor, limit = client.register_script(source("settle")), "0-0", settings.max_deliveries
    idle_ms = int(settings.claim_idle * 1000)
    while True:
        reply: Any = client.xautoclaim(keys.stream, GROUP, RECOVER_CONSUMER, idle_ms, cursor, count=BATCH)
        cursor = _text(reply[0])
        entries = [CallbackEntry.from_fields(_text(sid), f) for sid, f in reply[1] if sid is not None and f]
        ids = [entry.stream_id or "" for entry in entries]
        rows: Any = (
            client.xpending_range(keys.stream, GROUP, ids[0], ids[-1], len(ids), RECOVER_CONSUMER) if ids else []
        )
        times = {_text(row["message_id"]): int(row["times_delivered"]) for row in rows}
        settlement, now = Settlement(), str(_now_ms(client))
        for entry in entries:
            # A copy at the tail starts a fresh delivery count, so the leader's poison rule is applied here.
            if (read := times.get(entry.stream_id or "", 1)) > limit:
                reason = f"poison: read {read} times without being settled (CALLBACK_MAX_DELIVERIES={limit})"
                settlement.dead(entry, {"reason": reason, "status": "", "error": "", "dead_ms": now})
                report.dead_lettered += 1
            else:
                settlement.again(entry)
                report.handed_back += 1
        if settlement.count:
            settle(keys=[keys.stream, keys.delayed, keys.dead, keys.stats], args=[GROUP, *settlement.args])
        if cursor == "0-0":
            break
    client.register_script(FORGET_CONSUMER_LUA)(keys=[keys.stream], args=[GROUP, RECOVER_CONSUMER])


def _remove_stale_lease(client: redis.Redis, settings: Settings, keys: Keys) -> str | None:
    # WATCH: a renewal between the check and the DEL writes renewed_ms, which aborts the DEL.
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(keys.lease, keys.lease_info)  # type: ignore[no-untyped-call]
            info = _decode(pipe.hgetall(keys.lease_info))
            silent = _age(_now_ms(pipe), info.get("renewed_ms"))
            if not pipe.exists(keys.lease) or silent is None or silent <= settings.lease_ttl:
                return None
            pipe.multi()
            pipe.delete(keys.lease)
            pipe.execute()
        except WatchError:
            return None
    return info.get("holder", "?")


def _group(client: redis.Redis, keys: Keys) -> dict[str, Any] | None:
    try:
        groups: Any = client.xinfo_groups(keys.stream)
    except ResponseError:  # no stream yet
        return None
    return next((g for g in groups if _text(g["name"]) == GROUP), None)


def _consumers(client: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    try:
        rows: Any = client.xinfo_consumers(keys.stream, GROUP)
    except ResponseError:  # deleted meanwhile (ops reset)
        return []
    return [{"name": _text(r["name"]), "pending": int(r["pending"]), "idle": int(r["idle"]) / 1000} for r in rows]


def _entries(client: redis.Redis, key: str, low: str = "-", high: str = "+") -> Iterator[tuple[str, dict[str, str]]]:
    while rows := client.xrange(key, low, high, count=500):  # type: ignore[union-attr]
        yield from ((_text(sid), _decode(fields)) for sid, fields in rows)
        low = "(" + _text(rows[-1][0])


def _dead_letter(stream_id: str, fields: dict[str, str], now_ms: int) -> dict[str, Any]:
    return {
        "stream_id": stream_id,
        "callback_id": fields.get("cid", ""),
        "url": fields.get("url", ""),
        "reason": fields.get("reason", ""),
        "attempts": int(fields.get("att", 0)),
        "dead_age": _age(now_ms, fields.get("dead_ms") or stream_id.partition("-")[0]) or 0.0,
    }


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
    return {_text(k): _text(v) for k, v in (raw or {}).items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
