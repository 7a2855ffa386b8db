"""Operator commands as plain functions: each reads or repairs one queue's Redis state and returns a result.

Nothing here prints: ``ops.render`` turns results into text and ``ops.__main__`` is the CLI. Ages are
measured on the Redis clock (``TIME``), the clock the worker's scripts stamp entries with.
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

# Kept inline because ops ships Python only; same header convention as worker/streams/*.lua.
REPLAY_LUA = """
-- Move dead letters back to the stream as fresh callbacks; an id already gone is skipped,
-- so two replays running at once never enqueue one letter twice.
-- KEYS[1] dead-letter stream   KEYS[2] callback stream   ARGV[1..] dead-letter ids
-- Drops reason/status/error/dead_ms, sets att=0 and tq=now (ms, Redis clock). Returns how many moved.
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
    redis.call('XDEL', KEYS[1], id)
    moved = moved + 1
  end
end
return moved
"""
FORGET_CONSUMER_LUA = """
-- Delete a consumer only while it has nothing pending (XGROUP DELCONSUMER discards pending entries).
-- KEYS[1] callback stream   ARGV[1] group   ARGV[2] consumer.   Returns 1 when deleted.
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


@dataclass
class ConsumerState:
    """One consumer of the group: entries it holds unsettled, seconds since it last talked to Redis."""

    name: str
    pending: int
    idle: float


@dataclass
class LeaderState:
    """The lease as Redis holds it; ``held`` is whether the lease key exists right now."""

    held: bool
    holder: str | None = None
    epoch: int | None = None
    age: float | None = None
    since_renewal: float | None = None
    ttl: float | None = None


@dataclass
class Status:
    """One screen of queue health: backlog, pending work, retries, dead letters, leader and counters."""

    namespace: str
    queue: str
    backlog: int
    oldest_age: float | None
    group: bool
    pending: int
    lag: int | None
    consumers: list[ConsumerState]
    delayed: int
    next_due: float | None
    dead: int
    leader: LeaderState
    counters: dict[str, int]
    last_send_ago: float | None


@dataclass
class RecoverReport:
    """What ``recover`` changed; all zero/empty when there was nothing to do."""

    promoted: int = 0
    handed_back: int = 0
    dead_lettered: int = 0
    stale_lease: str | None = None
    consumers_removed: list[str] = field(default_factory=list)


@dataclass
class UnlockResult:
    """Whether a lease was deleted, and whose it was according to the lease info."""

    released: bool
    holder: str | None
    epoch: int | None


@dataclass
class ResetResult:
    """How many keys matching the namespace patterns were deleted."""

    deleted: int
    patterns: list[str]


@dataclass
class DeadLetter:
    """A dead letter as ``replay`` selects and lists it."""

    stream_id: str
    callback_id: str
    url: str
    reason: str
    status: str
    attempts: int
    dead_age: float


@dataclass(frozen=True)
class ReplayFilter:
    """Which dead letters to replay; ``None`` means any. Ages are seconds since dead-lettering."""

    reason: str | None = None
    host: str | None = None
    older_than: float | None = None
    newer_than: float | None = None
    limit: int | None = None

    def matches(self, letter: DeadLetter) -> bool:
        """Whether ``letter`` passes every filter that is set."""
        parts = urlsplit(letter.url)
        return (
            (self.reason is None or self.reason.lower() in letter.reason.lower())
            and (self.host is None or self.host.lower() in (parts.hostname, parts.netloc.lower()))
            and (self.older_than is None or letter.dead_age >= self.older_than)
            and (self.newer_than is None or letter.dead_age <= self.newer_than)
        )


@dataclass
class ReplayResult:
    """The dead letters that matched, and how many went back to the stream (0 on a dry run)."""

    matched: list[DeadLetter]
    replayed: int
    dry_run: bool


@dataclass
class Sighting:
    """Where a callback was found: ``stream``, ``delayed`` or ``dead``, with its fields (body truncated)."""

    place: str
    stream_id: str | None
    fields: dict[str, str]
    due_in: float | None = None
    consumer: str | None = None
    deliveries: int | None = None


@dataclass
class InspectResult:
    """Every place the queried callback or stream id was found (empty: not found)."""

    query: str
    sightings: list[Sighting]


def status(client: redis.Redis, settings: Settings) -> Status:
    """Read the queue's state; works on a namespace where nothing exists yet."""
    keys = Keys(settings.namespace, settings.queue)
    pipe = client.pipeline(transaction=False)
    pipe.time().xlen(keys.stream).xrange(keys.stream, count=1).zcard(keys.delayed)
    pipe.zrange(keys.delayed, 0, 0, withscores=True).xlen(keys.dead).exists(keys.lease).pttl(keys.lease)
    pipe.hgetall(keys.lease_info).hgetall(keys.stats)
    (sec, usec), backlog, first, delayed, head, dead, held, pttl, info, stats = pipe.execute()
    now = int(sec) * 1000 + int(usec) // 1000
    group = _group(client, keys)
    info, stats = _decode(info), _decode(stats)
    leader = LeaderState(bool(held), info.get("holder"), _int(info.get("epoch")))
    leader.age, leader.since_renewal = _age(now, info.get("acquired_ms")), _age(now, info.get("renewed_ms"))
    leader.ttl = int(pttl) / 1000 if int(pttl) >= 0 else None
    return Status(
        namespace=settings.namespace,
        queue=settings.queue,
        backlog=int(backlog),
        oldest_age=_age(now, _text(first[0][0]).partition("-")[0]) if first else None,
        group=group is not None,
        pending=int(group["pending"]) if group else 0,
        lag=_int(group.get("lag")) if group else None,
        consumers=_consumers(client, keys) if group else [],
        delayed=int(delayed),
        next_due=max(0.0, (head[0][1] - now) / 1000) if head else None,
        dead=int(dead),
        leader=leader,
        counters={name: int(stats.get(name, 0)) for name in (*COUNTERS, *stats) if name != "last_delivered_ms"},
        last_send_ago=_age(now, stats.get("last_delivered_ms")),
    )


def recover(client: redis.Redis, settings: Settings, *, forget_idle: float | None = None) -> RecoverReport:
    """Repair what a crash leaves behind; idempotent and safe while workers run.

    Moves due retries to the stream, hands entries idle longer than the claim idle time back to the
    stream's tail (poison ones, read more than ``max_deliveries`` times, to the dead letters), removes
    a lease whose holder stopped renewing, and deletes consumers with nothing pending that were idle
    for ``forget_idle`` seconds (default 10 x claim idle).
    """
    keys = Keys(settings.namespace, settings.queue)
    report = RecoverReport()
    promote, limit = client.register_script(source("promote")), settings.batch_size * 10
    while True:
        moved = int(promote(keys=[keys.delayed, keys.stream], args=[limit])[0])
        report.promoted += moved
        if moved < limit:
            break
    group = _group(client, keys) is not None
    if group:
        _hand_back(client, settings, keys, report)
    report.stale_lease = _remove_stale_lease(client, settings, keys)
    if group:
        forget = client.register_script(FORGET_CONSUMER_LUA)
        threshold = 10 * settings.claim_idle if forget_idle is None else forget_idle
        for consumer in _consumers(client, keys):
            if (
                consumer.pending == 0
                and consumer.idle >= threshold
                and forget(keys=[keys.stream], args=[GROUP, consumer.name])
            ):
                report.consumers_removed.append(consumer.name)
    return report


def unlock(client: redis.Redis, settings: Settings) -> UnlockResult:
    """Delete the leader lease whoever holds it; a live leader notices at its next renewal and stops."""
    keys = Keys(settings.namespace, settings.queue)
    info, deleted = client.pipeline(transaction=True).hgetall(keys.lease_info).delete(keys.lease).execute()
    info = _decode(info)
    return UnlockResult(bool(deleted), info.get("holder"), _int(info.get("epoch")))


def reset(client: redis.Redis, settings: Settings) -> ResetResult:
    """Delete every key of the namespace (SCAN by ``Keys.all_patterns()``; never FLUSHDB)."""
    patterns = list(Keys(settings.namespace, settings.queue).all_patterns())
    deleted = 0
    for pattern in patterns:
        found = client.scan_iter(match=pattern, count=1000)
        while batch := list(islice(found, 500)):
            deleted += int(client.delete(*batch))
    return ResetResult(deleted, patterns)


def replay(
    client: redis.Redis,
    settings: Settings,
    selection: ReplayFilter,
    *,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Send matching dead letters back to the stream (attempts reset); ``progress(done, total)`` per batch."""
    keys = Keys(settings.namespace, settings.queue)
    now = _now_ms(client)
    letters = (_dead_letter(sid, fields, now) for sid, fields in _entries(client, keys.dead))
    matched = list(islice((letter for letter in letters if selection.matches(letter)), selection.limit))
    replayed = 0
    if not dry_run:
        script = client.register_script(REPLAY_LUA)
        for start in range(0, len(matched), BATCH):
            replayed += int(
                script(keys=[keys.dead, keys.stream], args=[m.stream_id for m in matched[start : start + BATCH]])
            )
            if progress:
                progress(min(start + BATCH, len(matched)), len(matched))
    return ReplayResult(matched, replayed, dry_run)


def inspect(client: redis.Redis, settings: Settings, query: str) -> InspectResult:
    """Find a callback by callback id (``msg_...``) or stream id in the stream, delayed set and dead letters."""
    keys = Keys(settings.namespace, settings.queue)
    places = (("stream", keys.stream), ("dead", keys.dead))
    found: list[Sighting] = []
    if re.fullmatch(r"\d+(-\d+)?", query):
        for place, key in places:
            found += [Sighting(place, _text(sid), _preview(f)) for sid, f in _xrange(client, key, query, query, 1)]
    else:
        for place, key in places:
            found += [Sighting(place, sid, _preview(f)) for sid, f in _entries(client, key) if f.get("cid") == query]
        now = _now_ms(client)
        pattern = '*"cid":' + re.sub(r"([*?\[\]\\])", r"\\\1", json.dumps(query)) + "*"
        for member, score in client.zscan_iter(keys.delayed, match=pattern, count=1000):
            fields = {k: str(v) for k, v in json.loads(member).items()}
            if fields.get("cid") == query:
                found.append(Sighting("delayed", None, _preview(fields), due_in=(float(score) - now) / 1000))
    for sighting in found:
        if sighting.place == "stream" and sighting.stream_id:
            try:
                rows: Any = client.xpending_range(keys.stream, GROUP, sighting.stream_id, sighting.stream_id, 1)
            except ResponseError:  # no group yet: nothing is pending
                rows = []
            for row in rows:
                sighting.consumer, sighting.deliveries = _text(row["consumer"]), int(row["times_delivered"])
    return InspectResult(query, found)


def _hand_back(client: redis.Redis, settings: Settings, keys: Keys, report: RecoverReport) -> None:
    settle = client.register_script(source("settle"))
    cursor = "0-0"
    idle_ms = int(settings.claim_idle * 1000)
    while True:
        reply: Any = client.xautoclaim(keys.stream, GROUP, RECOVER_CONSUMER, idle_ms, cursor, count=BATCH)
        cursor = _text(reply[0])
        entries = [CallbackEntry.from_fields(_text(sid), f) for sid, f in reply[1] if sid is not None and f]
        if entries:
            ids = [e.stream_id or "" for e in entries]
            rows: Any = client.xpending_range(keys.stream, GROUP, ids[0], ids[-1], len(ids) + 1000, RECOVER_CONSUMER)
            times = {_text(row["message_id"]): int(row["times_delivered"]) for row in rows}
            settlement, now = Settlement(), str(_now_ms(client))
            for entry in entries:
                read = times.get(entry.stream_id or "", 1)
                if read > settings.max_deliveries:  # a fresh copy would reset the count: apply the limit here
                    reason = f"poison: read {read} times without being settled (CALLBACK_MAX_DELIVERIES={settings.max_deliveries})"
                    settlement.dead(entry, {"reason": reason, "status": "", "error": "", "dead_ms": now})
                    report.dead_lettered += 1
                else:
                    settlement.again(entry)
                    report.handed_back += 1
            settle(keys=[keys.stream, keys.delayed, keys.dead, keys.stats], args=[GROUP, *settlement.args])
        if cursor == "0-0":
            break
    client.register_script(FORGET_CONSUMER_LUA)(keys=[keys.stream], args=[GROUP, RECOVER_CONSUMER])


def _remove_stale_lease(client: redis.Redis, settings: Settings, keys: Keys) -> str | None:
    # WATCH: a renewal between the check and the DEL (it writes renewed_ms) aborts the DEL.
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(keys.lease, keys.lease_info)
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


def _consumers(client: redis.Redis, keys: Keys) -> list[ConsumerState]:
    try:
        rows: Any = client.xinfo_consumers(keys.stream, GROUP)
    except ResponseError:  # deleted meanwhile (ops reset)
        return []
    return [ConsumerState(_text(r["name"]), int(r["pending"]), int(r["idle"]) / 1000) for r in rows]


def _entries(client: redis.Redis, key: str) -> Iterator[tuple[str, dict[str, str]]]:
    start = "-"
    while page := _xrange(client, key, start, "+", 500):
        yield from page
        start = "(" + page[-1][0]


def _xrange(client: redis.Redis, key: str, low: str, high: str, count: int) -> list[tuple[str, dict[str, str]]]:
    rows: Any = client.xrange(key, low, high, count=count)
    return [(_text(sid), _decode(fields)) for sid, fields in rows]


def _dead_letter(stream_id: str, fields: dict[str, str], now: int) -> DeadLetter:
    dead_ms = fields.get("dead_ms") or stream_id.partition("-")[0]
    return DeadLetter(
        stream_id,
        fields.get("cid", ""),
        fields.get("url", ""),
        fields.get("reason", ""),
        fields.get("status", ""),
        int(fields.get("att", "0")),
        _age(now, dead_ms) or 0.0,
    )


def _preview(fields: dict[str, str]) -> dict[str, str]:
    body = fields.get("body", "")
    if len(body) > BODY_PREVIEW:
        return {**fields, "body": f"{body[:BODY_PREVIEW]}... ({len(body)} chars)"}
    return fields


def _now_ms(client: redis.Redis | redis.client.Pipeline) -> int:
    sec, usec = client.time()  # type: ignore[misc]
    return int(sec) * 1000 + int(usec) // 1000


def _age(now_ms: int, then_ms: str | None) -> float | None:
    return None if then_ms in (None, "") else max(0.0, (now_ms - int(then_ms)) / 1000)


def _int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def _decode(raw: Any) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in (raw or {}).items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
