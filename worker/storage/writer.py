"""The status writer: reads the status stream through a consumer group and keeps the database current.

A flush merges the buffered entries' updates, in stream order, into one change
per row (:mod:`.merge`), applies them in one transaction (:mod:`.apply`), and
only after the commit XACKs and XDELs the entries in one MULTI (with copies of
malformed updates added to ``status:bad``). It happens at ``flush_size``
updates, when the oldest has waited ``flush_interval``, or on :meth:`~StatusWriter.flush`.

Failures, and why nothing is lost or wrongly re-applied:

- database down or connection lost: the buffer is kept and the same flush is
  retried with backoff; if the lost connection had committed, the retry applies
  the same changes again, which the merge rules make a no-op;
- crash after commit, before ack: the entries stay pending; the next writer
  claims them (XAUTOCLAIM, cursor looped to ``0-0``) before reading new ones, so
  they are re-applied in stream order onto a row that already has them: no-op;
- Redis lost mid-read: entries may have been delivered to us but never
  returned; after any Redis error the writer claims every pending entry it
  does not hold before reading on;
- one writer per queue at a time (a lease; see :mod:`.service`), because stream
  order is what "last write wins" means, and parallel consumers would apply
  entries out of order.

Shard 0's writer then moves the committed mark forward (``commit_mark.lua``,
:func:`~worker.streams.status.publish_committed`) to the newest entry it
acked: callbacks held for ``CALLBACK_AFTER_COMMIT`` go once it covers them. It
does so whatever its own settings say, so a fleet that turns the setting on
process by process never holds a callback that no writer will release. A mark
not published (Redis failed after the ack) is published on the next turn.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import redis
from sqlalchemy.exc import SQLAlchemyError

from .. import metrics
from ..delivery.policy import retry_pause
from ..errors import StreamGone
from ..streams.client import REDIS_ERRORS
from ..streams.groups import Message, id_order
from ..streams.keys import Keys
from ..streams.protocol import SyncDriver
from ..streams.status import publish_committed
from ..streams.status_stream import StatusStream
from .apply import IncompleteWrite, StatusStore
from .entries import StatusEntry, decode_entry, reason, write

log = logging.getLogger(__name__)

READ_COUNT = 100  # entries per XREADGROUP
MAX_BACKOFF = 5.0
TRANSIENT: tuple[type[Exception], ...] = (SQLAlchemyError, IncompleteWrite, *REDIS_ERRORS)  # retried with backoff
FAILED_TURN: tuple[type[Exception], ...] = (StreamGone, *TRANSIENT)  # a turn of the loop that raised: retried


@dataclass(frozen=True)
class FlushResult:
    """What one flush wrote: entries acked, updates applied, rows changed, updates set aside as bad."""

    entries: int = 0
    updates: int = 0
    rows: int = 0
    rejected: int = 0


class StatusWriter:
    """Coalesces the status stream of one queue into the database. One thread; see the module docstring."""

    def __init__(
        self,
        client: redis.Redis,
        store: StatusStore,
        keys: Keys,
        *,
        consumer: str,
        flush_interval: float = 0.1,
        flush_size: int = 500,
        claim_idle: float = 30.0,
        idle_block: float = 1.0,
    ) -> None:
        self.client = client
        self.stream = StatusStream(client, keys)
        self._driver = SyncDriver(client)
        self.store = store
        self.keys = keys
        self.consumer = consumer
        self.flush_interval = flush_interval
        self.flush_size = flush_size
        self.claim_idle = claim_idle
        self.idle_block = idle_block
        self._buffer: dict[str, StatusEntry] = {}
        self._buffered_updates = 0
        self._oldest: float | None = None
        self._unacked: list[StatusEntry] = []
        self._unread: deque[Message] = deque()  # read, not yet decoded (the buffer was full)
        self._unmarked: str | None = None  # shard 0: the newest acked entry the committed mark may not cover yet
        self._per_entry = flush_size  # updates per entry, as last seen: the first read takes one entry
        self.failures = 0  # consecutive failed turns (Redis or database unavailable)
        self.retries = 0  # failed turns since start
        self._claim_all = True  # first thing: take over what dead predecessors left pending
        self._next_claim = time.monotonic() + claim_idle / 2

    # -- intake ---------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the consumer group from the stream's start, so updates written before it count."""
        self.stream.ensure_group()

    def read(self, block: float) -> int:
        """Read new entries until the buffer is full (waiting up to ``block`` s for the first); returns those taken.

        Reads are sized by the updates an entry lately carried; entries beyond
        ``flush_size`` updates wait undecoded (:meth:`_take`), nothing more read
        meanwhile: memory holds one read's raw entries and one flush, whatever the backlog.
        """
        taken = self._take()
        while not self._unread and self._buffered_updates < self.flush_size:
            count = max(1, min(READ_COUNT, (self.flush_size - self._buffered_updates) // self._per_entry))
            try:
                messages = self.stream.read(self.consumer, count, block)
            except StreamGone:
                self.ensure_group()  # the stream was deleted (ops reset): start over
                break
            except REDIS_ERRORS:
                self._claim_all = True  # the server may have delivered entries we never saw
                raise
            self._unread.extend(messages)
            taken += self._take()
            if len(messages) < count:  # nothing more waiting
                break
            block = 0.001  # only the first read waits
        return taken

    def reclaim(self, min_idle: float) -> int:
        """Claim entries pending for ``min_idle`` s (any consumer, ourselves included) that we do not hold."""
        held = set(self._buffer) | {entry.stream_id for entry in self._unacked} | {sid for sid, _ in self._unread}
        claimed = [(sid, fields) for sid, fields in self.stream.claim(self.consumer, min_idle) if sid not in held]
        if claimed:
            self._unread = deque(sorted([*self._unread, *claimed], key=lambda message: id_order(message[0])))
            log.info("status writer %s claimed %d pending entries", self.consumer, len(claimed))
        return len(claimed)

    def forget_idle_consumers(self) -> None:
        """Remove other consumers that hold nothing and have been idle for ``claim_idle`` (tidy XINFO)."""
        self.stream.forget_idle_consumers(keep=self.consumer, idle=self.claim_idle)

    def _take(self) -> int:
        """Decode unread entries into the buffer, in stream order, until it holds ``flush_size`` updates."""
        taken, largest = 0, 1
        while self._unread and self._buffered_updates < self.flush_size:
            sid, fields = self._unread.popleft()
            entry = decode_entry(sid, fields)
            if entry.stream_id in self._buffer:
                continue
            self._buffer[entry.stream_id] = entry
            size = max(1, len(entry.updates))
            self._buffered_updates += size
            largest = max(largest, size)
            if self._oldest is None:
                self._oldest = time.monotonic()
            taken += 1
        if taken:  # forget a big entry slowly, so reads after it stay small
            self._per_entry = max(largest, self._per_entry // 2)
        return taken

    @property
    def buffered(self) -> int:
        """Updates waiting for the next flush."""
        return self._buffered_updates

    @property
    def due(self) -> bool:
        """Whether the buffer should be flushed now (size reached or the oldest waited long enough)."""
        if not self._buffer:
            return False
        if self._unread:  # the buffer filled up with entries still waiting
            return True
        waited = time.monotonic() - (self._oldest or 0.0)
        return self._buffered_updates >= self.flush_size or waited >= self.flush_interval

    # -- flush ----------------------------------------------------------------------------------

    def flush(self) -> FlushResult:
        """Apply everything buffered in one transaction, then ack it. Database errors propagate, buffer kept."""
        self.ack_unacked()
        if not self._buffer:
            return FlushResult()
        started, statements = time.perf_counter(), self.store.statements
        entries = sorted(self._buffer.values(), key=lambda entry: entry.order)
        rows = write(self.store, entries)
        self._buffer, self._buffered_updates, self._oldest = {}, 0, None
        self._unacked.extend(entries)
        updates = sum(len(entry.updates) for entry in entries)
        rejected = sum(len(entry.rejected) for entry in entries)
        self.ack_unacked()
        namespace = self.keys.namespace
        metrics.STATUS_UPDATES.labels(namespace).inc(updates)
        metrics.STATUS_STATEMENTS.labels(namespace).inc(self.store.statements - statements)
        metrics.STATUS_FLUSH.labels(namespace).observe(time.perf_counter() - started)
        return FlushResult(len(entries), updates, rows, rejected)

    def ack_unacked(self) -> None:
        """XACK + XDEL applied entries (and set bad updates aside) in one MULTI; kept for later on failure.

        Shard 0's writer then moves the committed mark (:meth:`publish_committed`).
        """
        if not self._unacked:
            self.publish_committed()
            return
        entries = self._unacked
        ids = [entry.stream_id for entry in entries]
        try:
            acked = self.stream.ack(ids, [entry.bad_record() for entry in entries if entry.rejected])
        except StreamGone:
            log.warning(
                "status stream %s was deleted; %d applied entries need no ack", self.keys.status_updates, len(ids)
            )
            self._unacked, self._claim_all = [], True
            return
        self._unacked = []
        if self.keys.shard == 0:
            newest = max(ids, key=id_order)
            if self._unmarked is None or id_order(newest) > id_order(self._unmarked):
                self._unmarked = newest
        if acked < len(ids):
            log.warning(
                "status writer %s: %d of %d entries were no longer ours", self.consumer, len(ids) - acked, len(ids)
            )
        for entry in (entry for entry in entries if entry.rejected):
            why = entry.rejected[0][1]
            log.warning("status entry %s: %d updates set aside: %s", entry.stream_id, len(entry.rejected), why)
        self.publish_committed()

    def publish_committed(self) -> None:
        """Move the committed mark up to the newest entry acked since the last move; kept for later on failure."""
        if self._unmarked is None:
            return
        with contextlib.suppress(StreamGone):  # deleted meanwhile (ops reset): its entries and the mark's meaning too
            self._driver.run(publish_committed(self.keys, self._unmarked))
        self._unmarked = None

    def abandon(self) -> None:
        """Drop the buffer without acking (another writer took over; it claims the entries and moves the mark)."""
        self._buffer, self._buffered_updates, self._oldest = {}, 0, None
        self._unacked, self._unread, self._unmarked = [], deque(), None

    # -- loop -----------------------------------------------------------------------------------

    def step(self) -> int:
        """One turn of the loop: ack leftovers, claim, read, flush if due. Returns entries read."""
        self.ack_unacked()
        if self._claim_all:
            self.ensure_group()
            self.reclaim(0)
            self.forget_idle_consumers()
            self._claim_all = False
        elif time.monotonic() >= self._next_claim:
            self.reclaim(self.claim_idle)
            self._next_claim = time.monotonic() + self.claim_idle / 2
        block = self.idle_block  # short enough to renew the lease and notice a stop in time
        if self._oldest is not None:
            block = min(block, max(0.001, self._oldest + self.flush_interval - time.monotonic()))
        got = self.read(block)
        if self.due:
            self.flush()
        return got

    def run(
        self,
        should_stop: Callable[[], bool] = lambda: False,
        *,
        keep_lease: Callable[[], bool] = lambda: True,
        burst: bool = False,
    ) -> str:
        """Write until stopped (``"stopped"``), the lease is lost (``"lost"``) or, in burst mode, idle (``"idle"``)."""
        while True:
            if not keep_lease():
                self.abandon()
                return "lost"
            if should_stop():
                self._finish()
                return "stopped"
            try:
                got = self.step()
                self.failures = 0
            except FAILED_TURN as e:
                if isinstance(e, StreamGone):
                    self._claim_all = True  # the stream was deleted: recreate the group next turn
                self.failures += 1
                self.retries += 1
                metrics.STATUS_ERRORS.labels(self.keys.namespace).inc()
                delay = retry_pause(self.failures, cap=MAX_BACKOFF)
                log.warning("status writer: %s (%s); retrying in %.2fs", type(e).__name__, reason(e), delay)
                _sleep(delay, lambda: should_stop() or not keep_lease())
                continue
            if burst and not got:  # nothing new: flush what is left now and finish
                try:
                    self.flush()
                except TRANSIENT:
                    continue
                if not (self._buffer or self._unacked or self._unread or self._unmarked):
                    return "idle"

    def _finish(self, attempts: int = 3) -> None:
        for attempt in range(attempts):
            try:
                self.flush()
                return
            except TRANSIENT as e:
                log.warning(
                    "status writer stopping: flush failed (%s), %d tries left", reason(e), attempts - attempt - 1
                )
                time.sleep(0.2 * (attempt + 1))
        log.warning("status writer stopping with %d updates unflushed; the next writer claims them", self.buffered)


def _sleep(seconds: float, interrupted: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not interrupted() and time.monotonic() < deadline:
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
