"""A leader's host paces, kept in Redis: restored when a term starts, written back on housekeeping passes.

What a leader learned of each host (:mod:`.adaptive`) outlives it: the next
leader of the shard starts from the stored rates, pauses and circuits instead
of flooding a receiver that had just asked it to slow down. Operators' pauses
(``ops host pause``) are read on every pass too.
"""

from __future__ import annotations

import math
import time

from ..streams.host_book import QUIET, HostBook, HostRecord
from . import adaptive
from .hosts import HostQueues
from .observer import DeliveryObserver


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
        return restored

    async def sync(self) -> None:
        """Apply operators' pauses, forget quiet hosts, write what changed or is busy; tell the observer."""
        now = time.time()
        paused = await self.book.pauses()
        for host, until in paused.items():
            pace = self.queues.pace(host)
            if pace.held_until != until:
                pace.held_until, pace.changed = until, True
        for host, pace in self.queues.paces.items():
            if pace.held_until and host not in paused:
                pace.held_until, pace.changed = 0.0, True  # resumed
        gone = self.queues.forget_quiet(now, QUIET)
        records = []
        for host, pace in self.queues.paces.items():
            in_flight, waiting = self.queues.load(host)
            if pace.changed or in_flight or waiting:
                records.append(record(host, pace, in_flight, waiting, now))
                pace.changed = False
        await self.book.save(records, gone)
        paces = self.queues.paces.values()
        self.observer.hosts_sampled(
            open_circuits=sum(1 for p in paces if p.circuit != adaptive.CLOSED),
            held=sum(1 for p in paces if p.blocked(now)),
        )


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
