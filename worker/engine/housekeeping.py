"""A leader's periodic upkeep of its queue, one pass at a time.

Each pass moves due retries back to the stream, sheds what should not wait in
memory any longer, reclaims the entries of silent consumers (an entry read too
many times without being settled goes to the dead letters as poison), samples
the queue for metrics, and tells whether the queue is idle (burst mode stops then).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from ..config.settings import Settings
from ..errors import LeaseLost
from ..streams.status import now_ms
from ..streams.stream import CallbackStream, QueueSnapshot
from .backoff import back_off
from .host_keeper import HostKeeper
from .hosts import HostQueues
from .intake import Intake
from .observer import DeliveryObserver
from .settler import Settler

log = logging.getLogger(__name__)

PROMOTE_BATCHES = 10  # due retries moved per script call: this many batches
BURST_EVERY = 0.05  # seconds between passes in burst mode (tests, benchmarks): notice idleness soon


class Housekeeper:
    """Upkeep of one leader's queue; reclaimed entries go to ``intake``, a fenced-off reclaim calls ``lose``."""

    def __init__(
        self,
        settings: Settings,
        stream: CallbackStream,
        intake: Intake,
        settler: Settler,
        observer: DeliveryObserver,
        *,
        lose: Callable[[str], None],
        burst: bool = False,
        hosts: HostKeeper | None = None,
    ) -> None:
        self.settings = settings  # the leader's, replaced when it is reconfigured
        self.stream = stream
        self.intake = intake
        self.queues: HostQueues = intake.queues
        self.settler = settler
        self.observer = observer
        self.burst = burst
        self.idle = False  # burst mode: the queue was found idle, the leader may stop
        self.fenced = False  # a reclaim was refused: the lease is another leader's, passes are over
        self._lose = lose
        self.hosts = hosts

    async def run(self, consumer: str, fence: Callable[[], tuple[str, int]]) -> None:
        """Pass after pass as ``consumer`` under the lease's ``fence`` (token, epoch), until cancelled or fenced off."""
        failures = 0
        while not self.fenced:
            try:
                idle = await self.sweep(consumer, fence())
                failures = 0
            except (RedisError, OSError) as e:
                failures += 1
                await back_off("housekeeping", e, failures)
                continue
            self.idle = self.burst and idle
            await asyncio.sleep(self.settings.max_delay if not self.burst else BURST_EVERY)

    async def sweep(self, consumer: str, fence: tuple[str, int]) -> bool:
        """One pass; returns whether the queue is idle.

        Idle: nothing in the stream or the delayed set, nothing waiting or in
        flight in memory, nothing left to settle. Redis errors propagate.
        """
        settings = self.settings
        await self._promote_due(settings.batch_size * PROMOTE_BATCHES)
        self.intake.shed()
        await self._reclaim(settings, consumer, fence)
        if self.hosts is not None:
            await self.hosts.sync()
        snapshot = await self.stream.snapshot()
        self.observer.sampled(snapshot, self.queues.in_flight, self.queues.saturated_hosts())
        return self._idle(snapshot)

    async def _promote_due(self, limit: int) -> None:
        while True:
            moved, _ = await self.stream.promote_due(limit)
            if moved < limit:
                return

    async def _reclaim(self, settings: Settings, consumer: str, fence: tuple[str, int]) -> None:
        try:
            reclaimed = await self.stream.reclaim(consumer, settings.claim_idle, fence=fence)
        except LeaseLost as e:
            self.fenced = True
            self._lose(str(e))
            return
        self.intake.set_aside(reclaimed.malformed)
        limit = settings.max_deliveries
        live = []
        for entry in reclaimed.entries:
            if self.queues.holds(entry.stream_id):
                continue  # ours, still waiting in memory
            times = reclaimed.deliveries.get(entry.stream_id or "", 1)
            if times <= limit:
                live.append(entry)
                continue
            self.settler.poison(entry, times, limit, now_ms())
        if live:
            log.info("reclaimed %d pending callbacks from silent consumers", len(live))
            self.intake.accept(live)

    def _idle(self, snapshot: QueueSnapshot) -> bool:
        if self.queues.waiting or self.queues.in_flight or not self.settler.empty:
            return False
        return snapshot.length == 0 and snapshot.delayed == 0
