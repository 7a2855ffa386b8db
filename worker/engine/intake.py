"""A leader's intake: entries into the per-host queues, and out again when a saturated host cannot hold them.

New entries are read (XREADGROUP) as long as the host buffer has room;
reclaimed entries come in through :meth:`Intake.accept` too. What a saturated
host cannot keep, and what has waited too long, is deferred: parked in the
delayed set for a moment, not counted as an attempt.
"""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError

from ..config.settings import Settings
from ..errors import StreamGone
from ..streams.entry import CallbackEntry, Malformed
from ..streams.stream import CallbackStream
from .backoff import back_off
from .hosts import HostQueues
from .observer import DeliveryObserver
from .settler import Settler

DEFER_SECONDS = 1.0  # how long a callback of a saturated host waits before it is read again
MAX_BLOCK = 2.0  # seconds one read blocks at most (stopping waits for it)


class Intake:
    """Fills ``queues`` for one leader; sets ``work`` whenever entries arrive for dispatch."""

    def __init__(
        self,
        settings: Settings,
        stream: CallbackStream,
        queues: HostQueues,
        settler: Settler,
        observer: DeliveryObserver,
        *,
        work: asyncio.Event,
    ) -> None:
        self.settings = settings  # the leader's, replaced when it is reconfigured
        self.stream = stream
        self.queues = queues
        self.settler = settler
        self.observer = observer
        self._work = work
        self._space = asyncio.Event()  # the buffer may have room again
        self._stopping = False

    def wake(self) -> None:
        """The buffer may have room again (entries started, or the limits changed)."""
        self._space.set()

    def stop(self) -> None:
        """Read no more; :meth:`run` returns within one read's block time."""
        self._stopping = True
        self._space.set()

    async def run(self, consumer: str) -> None:
        """Read new entries as ``consumer`` into the queues until :meth:`stop`."""
        block = min(self.settings.max_delay, MAX_BLOCK)
        failures = 0
        while not self._stopping:
            self.shed()
            room = self.queues.buffer - self.queues.waiting
            if room <= 0:
                self._space.clear()
                await self._space.wait()
                continue
            try:
                received = await self.stream.read(consumer, min(room, self.settings.batch_size), block)
                failures = 0
            except StreamGone:  # deleted by ops reset, before or during the read: start over
                await self.stream.ensure_group()
                continue
            except (RedisError, OSError) as e:
                failures += 1
                await back_off("read", e, failures)
                continue
            self.set_aside(received.malformed)
            self.accept(received.entries)

    def set_aside(self, records: list[Malformed]) -> None:
        """Entries that are not callbacks go to the dead letters with their reasons; the leader reads on."""
        if records:
            self.settler.set_aside(records)
            self.observer.set_aside(len(records))

    def accept(self, entries: list[CallbackEntry]) -> None:
        """Queue ``entries`` (new or reclaimed) by host; those a saturated host cannot hold are deferred."""
        for entry in entries:
            if self.queues.holds(entry.stream_id):
                continue
            if not self.queues.offer(entry):
                self._defer(entry)
        if entries:
            self._work.set()

    def shed(self) -> None:
        """Defer what should not wait in memory any longer (a saturated host's overflow, overdue entries)."""
        shed = self.queues.shed()
        for entry in shed:
            self._defer(entry)
        if shed:
            self._space.set()

    def _defer(self, entry: CallbackEntry) -> None:
        # Its host is saturated (or it waited too long): park it in the delayed set, not as an attempt.
        self.settler.defer(entry, DEFER_SECONDS)
        self.observer.deferred(entry)
