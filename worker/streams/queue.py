"""The callback queue's operations (stream, delayed set, dead letters): each KEYS list and reply read once.

Operations of :mod:`.protocol`, run by the two fronts of :mod:`.stream`: the
leader's (asyncio) and the operators' (blocking). The consumer-group parts are
:mod:`.groups`', shared with the status stream.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .client import text, texts
from .entry import CallbackEntry, Malformed, decode, decode_member, replayed
from .groups import (
    Fence,
    Message,
    Pending,
    claim,
    claim_each,
    create_group,
    deliveries,
    forget_consumer,
    pending,
    read_group,
)
from .keys import GROUP, Keys
from .protocol import Batch, Command, Operation, Script
from .settlement import Settlement
from .snapshot import now_ms
from .status import callback_queued

PAGE = 500  # entries per XRANGE when a whole stream is read
PoisonRule = Callable[[Settlement, CallbackEntry, int, int, int], None]  # engine.attempt.record_poison


@dataclass(frozen=True)
class Received:
    """What one read returned: the callbacks, and the entries that are not callbacks (to be set aside)."""

    entries: list[CallbackEntry]
    malformed: list[Malformed] = field(default_factory=list)


@dataclass(frozen=True)
class Reclaimed:
    """Entries taken over from silent consumers, how often each was delivered, and those that are not callbacks."""

    entries: list[CallbackEntry]
    deliveries: dict[str, int]
    malformed: list[Malformed] = field(default_factory=list)


@dataclass(frozen=True)
class HandedBack:
    """What handing idle pending entries back did: re-added at the stream's tail, or dead-lettered as poison."""

    handed_back: int = 0
    dead_lettered: int = 0


def ensure_group(keys: Keys) -> Operation[None]:
    """Create the consumer group from the stream's start (entries added before it count)."""
    yield from create_group(keys.stream, GROUP)


def read(keys: Keys, consumer: str, count: int, block: float) -> Operation[Received]:
    """New entries for ``consumer``, waiting up to ``block`` seconds; ``StreamGone`` if the stream or group vanished.

    Entries that are not callbacks come back in :attr:`Received.malformed`: the caller sets them aside
    (``Settlement.aside``) with its next settlement, so one bad entry never stops the good ones.
    """
    messages = yield from read_group(keys.stream, GROUP, consumer, count, block)
    return Received(*_entries(messages))


def reclaim(
    keys: Keys, consumer: str, min_idle: float, fence: tuple[str, int] | None, count: int
) -> Operation[Reclaimed]:
    """Claim every entry idle ``min_idle`` s (any consumer, ``consumer`` included) with its delivery count.

    ``fence`` is the leader's lease token and epoch (the claim is refused,
    ``LeaseLost``, unless both are current); ``None`` for a plain claim.
    """
    fenced = None if fence is None else Fence(keys.lease, keys.epoch, *fence)
    entries, malformed = _entries((yield from claim(keys.stream, GROUP, consumer, min_idle, count=count, fence=fenced)))
    counts = yield from deliveries(keys.stream, GROUP, consumer, [e.stream_id or "" for e in entries])
    return Reclaimed(entries, counts, malformed)


def hand_back(
    keys: Keys, consumer: str, min_idle: float, max_deliveries: int, poison: PoisonRule, *, count: int = 100
) -> Operation[HandedBack]:
    """Claim entries idle ``min_idle`` s as ``consumer`` and settle them back to the stream's tail, page by page.

    A copy at the tail starts a fresh delivery count, so an entry read more than
    ``max_deliveries`` times is dead-lettered by ``poison`` instead (the
    leader's rule, ``engine.attempt.record_poison``). ``consumer`` is deleted
    afterwards. Not fenced: for operators repairing a queue, not for a leader.
    """
    handed = dead = 0

    def settle_page(messages: list[Message]) -> Operation[None]:
        nonlocal handed, dead
        entries, malformed = _entries(messages)
        times = yield from deliveries(keys.stream, GROUP, consumer, [e.stream_id or "" for e in entries])
        settlement, now = Settlement(), (yield from now_ms(keys))
        for record in malformed:
            settlement.aside(record, now)
            dead += 1
        for entry in entries:
            if (read := times.get(entry.stream_id or "", 1)) > max_deliveries:
                poison(settlement, entry, read, max_deliveries, now)
                dead += 1
            else:
                settlement.again(entry)
                handed += 1
        yield from settle(keys, settlement)

    yield from claim_each(keys.stream, GROUP, consumer, min_idle, settle_page, count=count)
    yield from forget_consumer(keys.stream, GROUP, consumer)
    return HandedBack(handed, dead)


def settle(keys: Keys, settlement: Settlement) -> Operation[int]:
    """Apply collected outcomes in one round trip (``settle.lua``); returns how many were still pending."""
    if settlement.empty:
        return 0
    script_keys = (keys.stream, keys.delayed, keys.dead, keys.stats, keys.status_updates)
    return int((yield Script("settle", script_keys, (GROUP, *settlement.script_args()))))


def promote_due(keys: Keys, limit: int) -> Operation[tuple[int, float | None]]:
    """Move up to ``limit`` due retries back to the stream; returns (moved, seconds until the next is due)."""
    moved, wait = yield Script("promote", (keys.delayed, keys.stream, keys.dead, keys.stats), (limit,))
    seconds = float(text(wait))
    return int(moved), (None if seconds < 0 else seconds)


def promote_all(keys: Keys, limit: int) -> Operation[int]:
    """Move every due retry back to the stream, ``limit`` per call; returns how many moved."""
    total, moved = 0, limit
    while moved >= limit:  # the script moves at most ``limit`` per call
        moved, _ = yield from promote_due(keys, limit)
        total += moved
    return total


def replay(keys: Keys, ids: Sequence[str]) -> Operation[int]:
    """Send the dead letters ``ids`` back as the next generation of their callbacks (``replay.lua``).

    Each goes back with its attempts reset and its dead-letter record kept in
    its history (:func:`.entry.replayed`), and its database row hears of the new
    generation (``queued``) atomically with the move. Returns how many moved.
    """
    if not ids:
        return 0
    now = yield from now_ms(keys)
    found = yield Batch(tuple(Command("xrange", (keys.dead, sid, sid)) for sid in ids))
    args: list[object] = []
    for sid, raw in (row for rows in found for row in rows or []):
        fields, entry = replayed(text(sid), raw, now)
        update = ""
        if entry is not None:
            queued = callback_queued(entry.callback_id, entry.url, entry.task_id, now, entry.generation)
            update = json.dumps(queued.as_json(), separators=(",", ":"))
        args += [sid, len(fields), *(item for pair in fields.items() for item in pair), update]
    if not args:
        return 0
    return int((yield Script("replay", (keys.dead, keys.stream, keys.status_updates), tuple(args))))


def page(key: str, low: str, high: str, count: int = PAGE) -> Operation[list[tuple[str, dict[str, str]]]]:
    """Entries of stream ``key`` with ids in ``low..high`` (``(`` excludes), at most ``count``, fields decoded."""
    rows = yield Command("xrange", (key, low, high), {"count": count})
    return [(text(sid), texts(fields)) for sid, fields in rows or []]


def delayed_with(keys: Keys, callback_id: str) -> Operation[list[tuple[dict[str, str], float]]]:
    """The delayed-set members of callback ``callback_id``: their fields and due times (ms). A scan."""
    pattern = '*"cid":' + re.sub(r"([*?\[\]\\])", r"\\\1", json.dumps(callback_id)) + "*"  # see CallbackEntry.member
    found, cursor = [], 0
    while True:
        cursor, rows = yield Command("zscan", (keys.delayed, cursor), {"match": pattern, "count": 1000})
        for member, score in rows:
            decoded = decode_member(member)
            if isinstance(decoded, Malformed):  # the scan matched its text: show it, with why it is unusable
                found.append(({**decoded.fields, "reason": f"malformed: {decoded.reason}"}, float(score)))
            elif decoded.callback_id == callback_id:
                found.append((decoded.fields(), float(score)))
        if int(cursor) == 0:
            return found


def pending_entry(keys: Keys, stream_id: str) -> Operation[Pending | None]:
    """Who holds stream entry ``stream_id`` and how often it was delivered; ``None`` if it is not pending."""
    rows = yield from pending(keys.stream, GROUP, stream_id, stream_id, 1)
    return rows[0] if rows else None


def _entries(messages: list[Message]) -> tuple[list[CallbackEntry], list[Malformed]]:
    entries: list[CallbackEntry] = []
    malformed: list[Malformed] = []
    for sid, fields in messages:
        decoded = decode(sid, fields)
        (malformed if isinstance(decoded, Malformed) else entries).append(decoded)  # type: ignore[arg-type]
    return entries, malformed
