"""A leader's host paces, kept in Redis: restored when a term starts, written back on housekeeping passes.

What a leader learned of each host (:mod:`.adaptive`) outlives it: the next
leader of the shard starts from the stored rates, pauses and circuits instead
of flooding a receiver that had just asked it to slow down. Operators' pauses
(``ops host pause``) are read on every pass too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from ..streams.host_book import QUIET, HostBook, HostRecord
from . import adaptive
from .hosts import HostQueues
from .observer import DeliveryObserver

HOLDING = 60.0  # seconds after a callback was last parked for its host that the host still counts as holding


class HostKeeper:
    """Moves one leader's host paces between memory (``queues``) and its shard's ``hosts`` hash (``book``)."""

    def __init__(self, book: HostBook, queues: HostQueues, observer: DeliveryObserver) -> None:
        self.book = book
        self.queues = queues
        self.observer = observer

    async def restore(self) -> int:
        """Take over the stored paces of hosts heard from lately; returns how many."""
        now = time.time()
        restored = 0
        for record in await self.book.load():
            if now - record.updated > QUIET:
                continue
            pace = self.queues.pace(record.host)
            pace.rate = max(adaptive.MIN_RATE, min(record.rate, self.queues.ceiling(record.host)))
            pace.capacity, pace.paused_until, pace.last_status = (
                record.capacity,
                record.paused_until,
                record.last_status,
            )
            if record.circuit != adaptive.CLOSED:  # a probe that was in flight is lost with its leader
                pace.circuit, pace.probe_at = adaptive.OPEN, max(now, record.probe_at)
            restored += 1
        self._apply(await self.book.pauses())
        return restored

    async def sync(self) -> None:
        """Apply pauses (read at the start too), forget quiet hosts, write what changed or is busy; report."""
        now = time.time()
        self._apply(await self.book.pauses())
        gone = self.queues.forget_quiet(now, QUIET)
        records, holding = [], []
        for host, pace in self.queues.paces.items():
            in_flight, waiting = self.queues.load(host)
            if pace.changed or in_flight or waiting:
                records.append(record(host, pace, in_flight, waiting, now))
                pace.changed = False
            # A circuit counts while it holds callbacks back (waiting here, or parked lately): one whose
            # callbacks are all gone is no outage anyone waits on, and is forgotten once quiet.
            if in_flight or waiting or now - pace.last_held < HOLDING:
                holding.append(pace)
        await self.book.save(records, gone)
        self.observer.hosts_sampled(
            open_circuits=sum(1 for pace in holding if pace.circuit != adaptive.CLOSED),
            held=sum(1 for pace in holding if pace.blocked(now)),
        )

    def _apply(self, paused: Mapping[str, float]) -> None:
        for host, until in paused.items():
            pace = self.queues.pace(host)
            if pace.held_until != until:
                pace.held_until, pace.changed = until, True
        for host, pace in self.queues.paces.items():
            if pace.held_until and host not in paused:
                pace.held_until, pace.changed = 0.0, True  # resumed


def record(host: str, pace: adaptive.HostPace, in_flight: int, waiting: int, now: float) -> HostRecord:
    """What is stored of ``pace``."""
    return HostRecord(
        host=host,
        rate=pace.rate if math.isfinite(pace.rate) else 0.0,
        capacity=pace.capacity,
        paused_until=pace.paused_until,
        circuit=pace.circuit,
        probe_at=pace.probe_at,
        last_status=pace.last_status,
        in_flight=in_flight,
        waiting=waiting,
        updated=now,
    )
