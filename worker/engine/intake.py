"""A leader's intake: entries into the per-host queues, and out again when a saturated host cannot hold them.

New entries are read (XREADGROUP) as long as the host buffer has room;
reclaimed entries come in through :meth:`Intake.accept` too. What a saturated
host cannot keep, and what has waited too long, is deferred: parked in the
delayed set for a moment, not counted as an attempt.

An image task's callback may wait for its task's final row (``CALLBACK_AFTER_COMMIT``):
its entry names the status entry holding that update (``after``), and its first
attempt waits here (:class:`CommitHold`) until the status writer's committed
mark covers it. The mark is read once per read batch that brings such an
entry, and every ``HOLD_RECHECK`` seconds while any is held. Held entries count
against the buffer; one held ``HOLD_LIMIT`` seconds (the writer may be down) is
deferred like a saturated host's, so it comes back, is held again, and goes
once the writer has committed: never lost, never delivered early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.exceptions import RedisError

from ..config.settings import Settings
from ..errors import StreamGone
from ..streams.entry import CallbackEntry, Malformed
from ..streams.status import covers
from ..streams.stream import CallbackStream
from .backoff import back_off
from .hosts import HostQueues
from .observer import DeliveryObserver
from .settler import Settler

log = logging.getLogger(__name__)

DEFER_SECONDS = 1.0  # how long a callback of a saturated host waits before it is read again
PARK_MAX = 30.0  # the longest a callback of a held-back or paced host is parked at a time
MAX_BLOCK = 2.0  # seconds one read blocks at most (stopping waits for it)
HOLD_RECHECK = 0.025  # seconds between reads of the committed mark while callbacks are held
HOLD_LIMIT = 5.0  # seconds a callback waits for its task's row at most (the hosts' max_wait if less), then deferred
HOLD_WARN_EVERY = 60.0  # seconds between log lines about held callbacks deferred


class CommitHold:
    """Callbacks whose first attempt waits for the committed mark to cover their ``after``; bookkeeping, no I/O."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.mark: str | None = None  # the committed mark as last read
        self._held: dict[str, tuple[CallbackEntry, float]] = {}  # by stream id: the entry, since when (monotonic)

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._held

    def must_wait(self, entry: CallbackEntry) -> bool:
        """Whether ``entry`` may not start yet: a first attempt whose status entry the mark does not cover."""
        return entry.after is not None and entry.attempts == 0 and not covers(self.mark, entry.after)

    def hold(self, entry: CallbackEntry, now: float) -> None:
        """Keep ``entry`` until the mark covers it."""
        self._held[entry.stream_id or entry.callback_id] = (entry, now)

    def release(self, now: float) -> tuple[list[CallbackEntry], list[CallbackEntry]]:
        """Remove and return the entries the mark covers, and those held ``limit`` seconds without (to defer)."""
        covered, overdue = [], []
        for key, (entry, since) in list(self._held.items()):
            if not self.must_wait(entry):
                covered.append(entry)
            elif now - since >= self.limit:
                overdue.append(entry)
            else:
                continue
            del self._held[key]
        return covered, overdue

    def drain(self) -> list[CallbackEntry]:
        """Remove and return every held entry."""
        entries = [entry for entry, _ in self._held.values()]
        self._held.clear()
        return entries


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
        self.hold = CommitHold(min(HOLD_LIMIT, queues.max_wait))
        self._looked = float("-inf")  # when the committed mark was last read (monotonic)
        self._told = False  # the log said why callbacks are held
        self._warned = float("-inf")  # when the log last said held callbacks were deferred

    def wake(self) -> None:
        """The buffer may have room again (entries started, or the limits changed)."""
        self._space.set()

    def stop(self) -> None:
        """Read no more; :meth:`run` returns within one read's block time."""
        self._stopping = True
        self._space.set()

    async def run(self, consumer: str) -> None:
        """Read new entries as ``consumer`` into the queues until :meth:`stop`; held ones are handed back then."""
        block = min(self.settings.max_delay, MAX_BLOCK)
        failures = 0
        try:
            while not self._stopping:
                if self.hold and time.monotonic() - self._looked >= HOLD_RECHECK:
                    await self._look()
                self.shed()
                room = self.queues.buffer - self.queues.waiting - len(self.hold)
                if room <= 0:
                    await self._wait_for_space()
                    continue
                count, wait = min(room, self.settings.batch_size), HOLD_RECHECK if self.hold else block
                try:
                    received = await self.stream.read(consumer, count, wait)
                    failures = 0
                except StreamGone:  # deleted by ops reset, before or during the read: start over
                    await self.stream.ensure_group()
                    continue
                except (RedisError, OSError) as e:
                    failures += 1
                    await back_off("read", e, failures)
                    continue
                self.set_aside(received.malformed)
                if any(self.hold.must_wait(entry) for entry in received.entries):
                    await self._look()  # once for the whole batch
                self.accept(received.entries)
        finally:
            for entry in self.hold.drain():  # unstarted: back to the stream's tail with the leader's last write
                self.settler.hand_back(entry)

    async def _wait_for_space(self) -> None:
        self._space.clear()
        if not self.hold:
            await self._space.wait()
            return
        with contextlib.suppress(TimeoutError):  # held entries need another look at the mark soon
            async with asyncio.timeout(HOLD_RECHECK):
                await self._space.wait()

    async def _look(self) -> None:
        """Read the committed mark; on failure the held entries wait on (and are deferred past the limit)."""
        self._looked = time.monotonic()
        try:
            self.hold.mark = await self.stream.committed()
        except (RedisError, OSError) as e:
            log.debug("committed mark not read (%s: %s); held callbacks wait", type(e).__name__, e)

    def set_aside(self, records: list[Malformed]) -> None:
        """Entries that are not callbacks go to the dead letters with their reasons; the leader reads on."""
        if records:
            self.settler.set_aside(records)
            self.observer.set_aside(len(records))

    def accept(self, entries: list[CallbackEntry]) -> None:
        """Queue ``entries`` (new or reclaimed) by host, or hold them for the committed mark (as last read).

        Those a saturated host cannot hold are deferred.
        """
        now = time.monotonic()
        for entry in entries:
            if self.queues.holds(entry.stream_id) or entry.stream_id in self.hold:
                continue
            if self.hold.must_wait(entry):
                self._hold(entry, now)
            elif not self.queues.offer(entry):
                self._defer(entry)
        if entries:
            self._work.set()

    def shed(self) -> None:
        """Defer what should not wait in memory any longer (a saturated host's overflow, overdue entries).

        Held entries the committed mark (as last read) covers go to their hosts;
        those held too long are deferred.
        """
        covered, overdue = self.hold.release(time.monotonic())
        for entry in covered:
            if not self.queues.offer(entry):
                self._defer(entry)
        if covered:
            self._work.set()
        if overdue:
            self._overdue(overdue)
        shed = self.queues.shed()
        for entry in shed:
            self._defer(entry)
        if shed or overdue:
            self._space.set()

    def _hold(self, entry: CallbackEntry, now: float) -> None:
        if not self._told:
            self._told = True
            log.info(
                "holding image tasks' callbacks until the status writer has committed their final rows "
                "(CALLBACK_AFTER_COMMIT); each waits %.1fs at most, then it is deferred and waits again",
                self.hold.limit,
            )
        self.hold.hold(entry, now)

    def _overdue(self, entries: list[CallbackEntry]) -> None:
        now = time.monotonic()
        if now - self._warned >= HOLD_WARN_EVERY:
            self._warned = now
            log.warning(
                "%d callbacks waited %.1fs for the status writer to commit their tasks' rows (committed up to %s); "
                "deferred for %.0fs, they wait again then. Is the status writer running?",
                len(entries),
                self.hold.limit,
                self.hold.mark or "nothing yet",
                DEFER_SECONDS,
            )
        for entry in entries:
            self._defer(entry)

    def _defer(self, entry: CallbackEntry) -> None:
        # Its host is saturated, held back or paced, or it waited too long: park it in the delayed set, not
        # as an attempt; for as long as its host makes it wait (up to PARK_MAX), unless it is too old by now.
        parked = self.queues.parking(entry)
        seconds = DEFER_SECONDS
        if parked is not None:
            why, wait, expires = parked
            age = time.time() - entry.first_enqueued_ms / 1000 if entry.first_enqueued_ms else 0.0
            if expires and age > self.settings.max_age:
                self.settler.expire(entry, why, self.settings.max_age)
                return
            seconds = min(PARK_MAX, max(DEFER_SECONDS, wait))
        self.settler.defer(entry, seconds)
        self.observer.deferred(entry)
