"""The callback stream's two fronts: :class:`CallbackStream` for the leader (asyncio), :class:`SyncCallbackStream`
for operators (blocking). Both only run the operations of :mod:`.queue` and :mod:`.groups`; neither builds a
KEYS list or reads a reply itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import redis
import redis.asyncio as aioredis

from . import groups, queue, snapshot, status
from .groups import ConsumerInfo, GroupInfo, Pending
from .keys import GROUP, Keys
from .protocol import AsyncDriver, SyncDriver
from .queue import HandedBack, PoisonRule, Received, Reclaimed
from .settlement import Settlement
from .snapshot import QueueSnapshot, QueueState


class CallbackStream:
    """Leader-side operations on one queue's stream, delayed set and dead-letter stream."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._driver = AsyncDriver(client)
        self.keys = keys

    async def ensure_group(self) -> None:
        """Create the consumer group from the stream's start (entries added before it count)."""
        await self._driver.run(queue.ensure_group(self.keys))

    async def read(self, consumer: str, count: int, block: float) -> Received:
        """New entries for ``consumer``, waiting up to ``block`` seconds for the first.

        Raises ``StreamGone`` when the stream or its group was deleted before or during the read.
        Entries that are not callbacks are in ``malformed``: set them aside.
        """
        return await self._driver.run(queue.read(self.keys, consumer, count, block))

    async def reclaim(self, consumer: str, min_idle: float, fence: tuple[str, int], count: int = 100) -> Reclaimed:
        """Claim every entry idle for ``min_idle`` seconds (any consumer, ourselves included).

        ``fence`` is the caller's lease token and epoch: the claim is refused
        (``LeaseLost``) unless both are current.
        """
        return await self._driver.run(queue.reclaim(self.keys, consumer, min_idle, fence, count))

    async def snapshot(self) -> QueueSnapshot:
        """Backlog, pending, lag, age of the oldest entry, delayed and dead-letter counts: one round trip."""
        return await self._driver.run(snapshot.snapshot(self.keys))

    async def settle(self, settlement: Settlement) -> int:
        """Apply collected outcomes in one round trip; returns how many were still pending."""
        return await self._driver.run(queue.settle(self.keys, settlement))

    async def promote_due(self, limit: int) -> tuple[int, float | None]:
        """Move due retries back to the stream; returns (moved, seconds until the next is due)."""
        return await self._driver.run(queue.promote_due(self.keys, limit))

    async def promote_all(self, limit: int) -> int:
        """Move every due retry back, ``limit`` per call (until fewer move); returns how many moved."""
        return await self._driver.run(queue.promote_all(self.keys, limit))

    async def committed(self) -> str | None:
        """The status writer's committed mark (of shard 0's status stream, whichever shard this is)."""
        return await self._driver.run(status.committed(self.keys))


class SyncCallbackStream:
    """The same protocol over a blocking client, for operators (``ops``): no lease, so claims are not fenced."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._driver = SyncDriver(client)
        self.keys = keys

    def now_ms(self) -> int:
        """The Redis clock in milliseconds (the scripts' clock)."""
        return self._driver.run(snapshot.now_ms(self.keys))

    def state(self) -> QueueState:
        """Everything ``ops status`` shows of the queue, but the status writer."""
        return self._driver.run(snapshot.state(self.keys))

    def group(self) -> GroupInfo | None:
        """The consumer group; ``None`` before the first leader created it."""
        return self._driver.run(groups.group_info(self.keys.stream, GROUP))

    def consumers(self) -> list[ConsumerInfo]:
        """The group's consumers; none before the group exists."""
        return self._driver.run(groups.consumers(self.keys.stream, GROUP))

    def settle(self, settlement: Settlement) -> int:
        """Apply collected outcomes in one round trip; returns how many were still pending."""
        return self._driver.run(queue.settle(self.keys, settlement))

    def reclaim(
        self, consumer: str, min_idle: float, fence: tuple[str, int] | None = None, count: int = 100
    ) -> Reclaimed:
        """Claim every entry idle for ``min_idle`` seconds as ``consumer``; fenced only if ``fence`` is given."""
        return self._driver.run(queue.reclaim(self.keys, consumer, min_idle, fence, count))

    def promote_all(self, limit: int) -> int:
        """Move every due retry back, ``limit`` per call (until fewer move); returns how many moved."""
        return self._driver.run(queue.promote_all(self.keys, limit))

    def hand_back(self, consumer: str, min_idle: float, max_deliveries: int, poison: PoisonRule) -> HandedBack:
        """Hand entries pending ``min_idle`` s back to the stream's tail, poison ones to the dead letters."""
        return self._driver.run(queue.hand_back(self.keys, consumer, min_idle, max_deliveries, poison))

    def forget_idle_consumers(self, idle: float) -> list[str]:
        """Delete consumers holding nothing and silent for ``idle`` s or more; their names."""
        return self._driver.run(groups.forget_idle_consumers(self.keys.stream, GROUP, idle))

    def replay(self, ids: Sequence[str]) -> int:
        """Send dead letters back to the stream as fresh callbacks; returns how many moved (gone ones are skipped)."""
        return self._driver.run(queue.replay(self.keys, ids))

    def entries(self, key: str, low: str = "-", high: str = "+") -> Iterator[tuple[str, dict[str, str]]]:
        """The entries of stream ``key`` (``keys.stream`` or ``keys.dead``) in ``low..high``, read in pages."""
        while rows := self._driver.run(queue.page(key, low, high)):
            yield from rows
            low = "(" + rows[-1][0]

    def delayed_with(self, callback_id: str) -> list[tuple[dict[str, str], float]]:
        """The delayed retries of one callback: their fields and due times (ms, Redis clock)."""
        return self._driver.run(queue.delayed_with(self.keys, callback_id))

    def pending_entry(self, stream_id: str) -> Pending | None:
        """Who holds a stream entry and how often it was delivered; ``None`` if nobody does."""
        return self._driver.run(queue.pending_entry(self.keys, stream_id))


__all__: Sequence[str] = ("CallbackStream", "QueueSnapshot", "Received", "Reclaimed", "SyncCallbackStream")
