"""One queue seen at one moment: sizes, ages, the group and the lease, each read in one round trip or two.

For the leader's metrics (:func:`snapshot`) and ``ops status`` (:func:`state`); operations of :mod:`.protocol`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .client import text, texts
from .groups import ConsumerInfo, GroupInfo, find_consumers, find_group, id_order
from .keys import GROUP, Keys
from .protocol import Batch, Command, Operation, Script


@dataclass(frozen=True)
class QueueSnapshot:
    """Sizes and ages of one queue at one moment (for metrics and status)."""

    length: int
    pending: int
    lag: int
    oldest_age: float
    delayed: int
    dead: int


@dataclass(frozen=True)
class QueueState:
    """Everything ``ops status`` shows of one queue, read at ``now_ms`` (Redis clock); raw, not yet judged."""

    now_ms: int
    length: int
    oldest_ms: int | None  # when the oldest stream entry was added
    delayed: int
    next_due_ms: float | None  # due time of the first delayed entry
    dead: int
    lease_held: bool
    lease_ttl_ms: int  # PTTL: -2 no lease, -1 no expiry
    lease_info: dict[str, str]
    stats: dict[str, str]
    group: GroupInfo | None
    consumers: list[ConsumerInfo] = field(default_factory=list)


def now_ms(keys: Keys) -> Operation[int]:
    """The clock of the Redis (node) holding ``keys``, in milliseconds: the scripts' clock."""
    sec, usec = yield Script("clock", (keys.stream,))
    return int(sec) * 1000 + int(usec) // 1000


def snapshot(keys: Keys) -> Operation[QueueSnapshot]:
    """Backlog, pending, lag, age of the oldest entry, delayed and dead-letter counts: two round trips."""
    now = yield from now_ms(keys)
    length, groups, first, delayed, dead = yield Batch(
        (
            Command("xlen", (keys.stream,)),
            Command("xinfo_groups", (keys.stream,)),
            Command("xrange", (keys.stream,), {"count": 1}),
            Command("zcard", (keys.delayed,)),
            Command("xlen", (keys.dead,)),
        ),
        raise_on_error=False,
    )
    group = find_group(groups, GROUP)
    oldest = (now - id_order(text(first[0][0]))[0]) / 1000 if first else 0.0
    return QueueSnapshot(
        length=int(length) if isinstance(length, int) else 0,
        pending=group.pending if group else 0,
        lag=(group.lag or 0) if group else 0,
        oldest_age=max(0.0, oldest),
        delayed=int(delayed),
        dead=int(dead),
    )


def state(keys: Keys) -> Operation[QueueState]:
    """The queue, the delayed set, the dead letters, the leader lease, the counters, the group: three round trips."""
    now = yield from now_ms(keys)
    length, first, delayed, head, dead, held, ttl, info, stats = yield Batch(
        (
            Command("xlen", (keys.stream,)),
            Command("xrange", (keys.stream,), {"count": 1}),
            Command("zcard", (keys.delayed,)),
            Command("zrange", (keys.delayed, 0, 0), {"withscores": True}),
            Command("xlen", (keys.dead,)),
            Command("exists", (keys.lease,)),
            Command("pttl", (keys.lease,)),
            Command("hgetall", (keys.lease_info,)),
            Command("hgetall", (keys.stats,)),
        )
    )
    groups, rows = yield Batch(  # errors mean "no stream or group yet"
        (Command("xinfo_groups", (keys.stream,)), Command("xinfo_consumers", (keys.stream, GROUP))),
        raise_on_error=False,
    )
    group = find_group(groups, GROUP)
    return QueueState(
        now_ms=now,
        length=int(length),
        oldest_ms=id_order(text(first[0][0]))[0] if first else None,
        delayed=int(delayed),
        next_due_ms=float(head[0][1]) if head else None,
        dead=int(dead),
        lease_held=bool(held),
        lease_ttl_ms=int(ttl),
        lease_info=texts(info),
        stats=texts(stats),
        group=group,
        consumers=find_consumers(rows) if group else [],
    )
