"""Consumer-group operations on any stream (the callback stream and the status stream), written once.

Each is an operation of :mod:`.protocol`: create a group, read new entries,
claim idle pending ones (XAUTOCLAIM's cursor loop, fenced by a lease or not),
how often entries were delivered, group and consumer info, forgetting an idle
consumer. Entries come back as :data:`Message`: the id as ``str`` and the
fields as received (``bytes`` from a blocking client, ``str`` from the leader's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from ..errors import StreamGone
from .client import text
from .protocol import Command, GroupExists, Operation, Script

Message = tuple[str, Mapping[Any, Any]]
PageHandler = Callable[[list[Message]], Operation[None]]


@dataclass(frozen=True)
class Fence:
    """A lease holder's token and epoch, and the lease's keys: a claim only the current holder may make."""

    lease_key: str
    epoch_key: str
    token: str
    epoch: int


@dataclass(frozen=True)
class GroupInfo:
    """One consumer group: entries read and not acked, and entries not read yet (``None``: Redis cannot tell)."""

    pending: int
    lag: int | None


@dataclass(frozen=True)
class ConsumerInfo:
    """One consumer of a group: what it holds and how long it has been silent (seconds)."""

    name: str
    pending: int
    idle: float


@dataclass(frozen=True)
class Pending:
    """One pending entry: who holds it and how often it was delivered."""

    stream_id: str
    consumer: str
    deliveries: int


def id_order(stream_id: str) -> tuple[int, int]:
    """Sort key of a stream id (``ms-seq``): stream order; ``ms`` is the Redis clock when it was added."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def create_group(stream: str, group: str) -> Operation[None]:
    """Create ``group`` reading from the stream's start (entries added before it count); a no-op if it exists."""
    with suppress(GroupExists):
        yield Command("xgroup_create", (stream, group), {"id": "0", "mkstream": True})


def read_group(stream: str, group: str, consumer: str, count: int, block: float) -> Operation[list[Message]]:
    """New entries for ``consumer``, waiting up to ``block`` seconds for the first; ``StreamGone`` without group."""
    reply = yield Command(
        "xreadgroup", (group, consumer, {stream: ">"}), {"count": count, "block": max(1, int(block * 1000))}
    )
    return [(text(sid), fields) for _, messages in reply or [] for sid, fields in messages]


def claim_each(
    stream: str,
    group: str,
    consumer: str,
    min_idle: float,
    handle: PageHandler,
    *,
    count: int,
    fence: Fence | None = None,
) -> Operation[None]:
    """Claim for ``consumer`` every entry pending ``min_idle`` s or more (any holder, itself included), page by page.

    XAUTOCLAIM scans at most ``count * 10`` pending entries per call, so this
    loops until the cursor returns to ``0-0``, handing each non-empty page to
    ``handle`` (an operation too). With a ``fence`` the claim goes through
    ``reclaim.lua`` and is refused (``LeaseLost``) unless the lease's token and
    epoch are both current: a deposed leader must not steal its successor's
    entries. Without one (operators, the status writer: no leader) it is a plain
    XAUTOCLAIM. Entries deleted while pending are skipped.
    """
    cursor, idle_ms = "0-0", int(min_idle * 1000)
    while True:
        if fence is None:
            reply = yield Command("xautoclaim", (stream, group, consumer, idle_ms, cursor), {"count": count})
        else:
            keys = (stream, fence.lease_key, fence.epoch_key)
            reply = yield Script("reclaim", keys, (group, consumer, idle_ms, cursor, count, fence.token, fence.epoch))
        cursor = text(reply[0])
        page = [(text(sid), fields) for sid, raw in reply[1] if (fields := _fields(raw))]
        if page:
            yield from handle(page)
        if cursor == "0-0":
            return


def claim(
    stream: str, group: str, consumer: str, min_idle: float, *, count: int, fence: Fence | None = None
) -> Operation[list[Message]]:
    """Every page of :func:`claim_each`, in one list."""
    claimed: list[Message] = []

    def collect(page: list[Message]) -> Operation[None]:
        claimed.extend(page)
        yield from ()

    yield from claim_each(stream, group, consumer, min_idle, collect, count=count, fence=fence)
    return claimed


def deliveries(stream: str, group: str, consumer: str, ids: Sequence[str]) -> Operation[dict[str, int]]:
    """How often each of ``ids``, pending with ``consumer``, was delivered (ids not pending are left out)."""
    if not ids:
        return {}
    ordered = sorted(ids, key=id_order)
    # The range may hold other entries of the same consumer (a leader's in-flight ones): room for them.
    rows = yield from pending(stream, group, ordered[0], ordered[-1], len(ordered) + 10_000, consumer=consumer)
    wanted = set(ids)
    return {row.stream_id: row.deliveries for row in rows if row.stream_id in wanted}


def pending(
    stream: str, group: str, low: str, high: str, count: int, *, consumer: str | None = None
) -> Operation[list[Pending]]:
    """Pending entries with ids in ``low..high`` (of ``consumer`` only, if given), at most ``count``."""
    options = {} if consumer is None else {"consumername": consumer}
    rows = yield Command("xpending_range", (stream, group, low, high, count), options)
    return [Pending(text(r["message_id"]), text(r["consumer"]), int(r["times_delivered"])) for r in rows]


def group_info(stream: str, group: str) -> Operation[GroupInfo | None]:
    """``group`` of ``stream``; ``None`` before it (or the stream) exists."""
    try:
        groups = yield Command("xinfo_groups", (stream,))
    except (StreamGone, ResponseError):  # no stream yet, or deleted meanwhile (ops reset)
        return None
    return find_group(groups, group)


def find_group(groups: Any, name: str) -> GroupInfo | None:
    """Group ``name`` in an XINFO GROUPS reply; ``None`` if absent or the reply is an error (from a pipeline)."""
    if not isinstance(groups, list):
        return None
    for row in groups:
        if text(row["name"]) == name:
            lag = row.get("lag")
            return GroupInfo(int(row["pending"]), None if lag is None else int(lag))
    return None


def consumers(stream: str, group: str) -> Operation[list[ConsumerInfo]]:
    """The consumers of ``group``; none before the group exists."""
    try:
        rows = yield Command("xinfo_consumers", (stream, group))
    except (StreamGone, ResponseError):  # no stream or group yet, or deleted meanwhile
        return []
    return find_consumers(rows)


def find_consumers(rows: Any) -> list[ConsumerInfo]:
    """The consumers in an XINFO CONSUMERS reply; none if the reply is an error (from a pipeline)."""
    if not isinstance(rows, list):
        return []
    return [ConsumerInfo(text(r["name"]), int(r["pending"]), int(r["idle"]) / 1000) for r in rows]


def forget_consumer(stream: str, group: str, consumer: str) -> Operation[bool]:
    """Delete ``consumer`` only while it has nothing pending (XGROUP DELCONSUMER would drop its entries)."""
    return bool(int((yield Script("forget_consumer", (stream,), (group, consumer)))))


def forget_idle_consumers(stream: str, group: str, idle: float, *, keep: str | None = None) -> Operation[list[str]]:
    """Delete the consumers (but ``keep``) holding nothing and silent for ``idle`` s or more; their names."""
    removed = []
    for consumer in (yield from consumers(stream, group)):
        if consumer.name == keep or consumer.pending or consumer.idle < idle:
            continue
        if (yield from forget_consumer(stream, group, consumer.name)):
            removed.append(consumer.name)
    return removed


def _fields(raw: Any) -> Mapping[Any, Any] | None:
    """An entry's fields: redis-py parses them to a dict, a script's reply leaves them flat ``[f, v, ...]``."""
    if raw is None or isinstance(raw, Mapping):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))
