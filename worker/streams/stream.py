"""The callback stream as the leader sees it: read, reclaim, settle, promote due retries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ..errors import LeaseLost, StreamGone
from .client import text
from .entry import CallbackEntry
from .keys import GROUP, Keys
from .scripts import source
from .settlement import Settlement


@dataclass(frozen=True)
class Reclaimed:
    """Entries taken over from silent consumers, and how often each was delivered."""

    entries: list[CallbackEntry]
    deliveries: dict[str, int]


@dataclass(frozen=True)
class QueueSnapshot:
    """Sizes and ages of one queue at one moment (for metrics and status)."""

    length: int
    pending: int
    lag: int
    oldest_age: float
    delayed: int
    dead: int


class CallbackStream:
    """Leader-side operations on one queue's stream, delayed set and dead-letter stream."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._client = client
        self.keys = keys
        self._settle = client.register_script(source("settle"))
        self._promote = client.register_script(source("promote"))
        self._reclaim = client.register_script(source("reclaim"))

    async def ensure_group(self) -> None:
        """Create the consumer group from the stream's start (entries added before it count)."""
        try:
            await self._client.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def read(self, consumer: str, count: int, block: float) -> list[CallbackEntry]:
        """New entries for ``consumer``, waiting up to ``block`` seconds for the first."""
        try:
            reply: Any = await self._client.xreadgroup(
                GROUP, consumer, {self.keys.stream: ">"}, count=count, block=max(1, int(block * 1000))
            )
        except ResponseError as e:
            if "NOGROUP" in str(e) or "UNBLOCKED" in str(e):  # deleted before or during the read
                raise StreamGone(f"{self.keys.stream} or its group was deleted") from e
            raise
        return [CallbackEntry.from_fields(text(sid), fields) for _, messages in reply or [] for sid, fields in messages]

    async def reclaim(self, consumer: str, min_idle: float, fence: tuple[str, int], count: int = 100) -> Reclaimed:
        """Claim every entry idle for ``min_idle`` seconds (any consumer, ourselves included).

        ``fence`` is the caller's lease token and epoch: the claim is refused
        (``LeaseLost``) unless both are current. XAUTOCLAIM scans at most
        ``count * 10`` pending entries per call, so this loops until the cursor
        returns to ``0-0``.
        """
        token, epoch = fence
        keys = [self.keys.stream, self.keys.lease, self.keys.epoch]
        entries: list[CallbackEntry] = []
        cursor = "0-0"
        while True:
            try:
                reply = await self._reclaim(
                    keys=keys, args=[GROUP, consumer, int(min_idle * 1000), cursor, count, token, epoch]
                )
            except ResponseError as e:
                if "FENCED" in str(e):
                    raise LeaseLost(str(e)) from e
                raise
            cursor = text(reply[0])
            for sid, flat in reply[1]:
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                entries.append(CallbackEntry.from_fields(text(sid), fields))
            if cursor == "0-0":
                break
        deliveries: dict[str, int] = {}
        if entries:
            ids = sorted((e.stream_id or "" for e in entries), key=_id_key)
            pending: list[dict[str, Any]] = await self._client.xpending_range(
                self.keys.stream, GROUP, min=ids[0], max=ids[-1], count=len(ids) + 10_000, consumername=consumer
            )
            wanted = set(ids)
            for row in pending:
                sid = text(row["message_id"])
                if sid in wanted:
                    deliveries[sid] = int(row["times_delivered"])
        return Reclaimed(entries, deliveries)

    async def snapshot(self) -> QueueSnapshot:
        """Backlog, pending, lag, age of the oldest entry, delayed and dead-letter counts: one round trip."""
        pipe = self._client.pipeline(transaction=False)
        pipe.xlen(self.keys.stream)
        pipe.xinfo_groups(self.keys.stream)
        pipe.xrange(self.keys.stream, count=1)
        pipe.zcard(self.keys.delayed)
        pipe.xlen(self.keys.dead)
        pipe.time()
        length, groups, first, delayed, dead, now = await pipe.execute(raise_on_error=False)
        group = next((g for g in groups if text(g["name"]) == GROUP), None) if isinstance(groups, list) else None
        now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
        oldest = (now_ms - _id_key(text(first[0][0]))[0]) / 1000 if first else 0.0
        return QueueSnapshot(
            length=int(length) if isinstance(length, int) else 0,
            pending=int(group["pending"]) if group else 0,
            lag=int(group.get("lag") or 0) if group else 0,
            oldest_age=max(0.0, oldest),
            delayed=int(delayed),
            dead=int(dead),
        )

    async def settle(self, settlement: Settlement) -> int:
        """Apply collected outcomes in one round trip; returns how many were still pending."""
        if settlement.empty:
            return 0
        keys = [self.keys.stream, self.keys.delayed, self.keys.dead, self.keys.stats, self.keys.status_updates]
        return int(await self._settle(keys=keys, args=[GROUP, *settlement.script_args()]))

    async def promote_due(self, limit: int) -> tuple[int, float | None]:
        """Move due retries back to the stream; returns (moved, seconds until the next is due)."""
        moved, wait = await self._promote(keys=[self.keys.delayed, self.keys.stream], args=[limit])
        seconds = float(text(wait))
        return int(moved), (None if seconds < 0 else seconds)


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


__all__: Sequence[str] = ("CallbackStream", "QueueSnapshot", "Reclaimed")
