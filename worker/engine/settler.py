"""The leader's settle buffer: finished work gathered and written in one ``settle.lua`` call.

Outcomes (acks, retries, dead letters, deferrals, hand-backs) and their status
updates collect in a :class:`~worker.streams.settlement.Settlement`. The settle
loop writes it every few milliseconds while outcomes arrive, at once when the
batch is full or an entry must leave memory (a deferral, a poison entry), and
sleeps while there is nothing to write. A failed write keeps its outcomes,
ahead of newer ones, for the next write.

An attempt's "sending" update waits here apart from the rest: when the attempt
ends before the write, it is dropped, since the writer's merge would let the
final state overwrite every field of it anyway.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from ..streams.entry import CallbackEntry, Malformed
from ..streams.settlement import Settlement
from ..streams.status import StatusUpdate, now_ms
from ..streams.stream import CallbackStream
from .attempt import Outcome, record_expired, record_outcome, record_poison
from .backoff import wait_for_event

log = logging.getLogger(__name__)

SETTLE_EVERY = 0.005  # seconds between settle round trips while outcomes arrive
RETRY_PAUSE = 0.1  # seconds between tries of a failed write (times the try number)


class Settler:
    """Collects one leader's outcomes and writes them to ``stream``, ``batch_size`` at most per write."""

    def __init__(self, stream: CallbackStream, batch_size: int) -> None:
        self.stream = stream
        self.batch_size = batch_size
        self._batch = Settlement()
        self._sending: dict[str, StatusUpdate] = {}  # by callback id, until the attempt ends or is written
        self._pending = asyncio.Event()  # the buffer is no longer empty
        self._now = asyncio.Event()  # write without waiting for more

    @property
    def empty(self) -> bool:
        """Whether nothing waits to be written."""
        return self._batch.empty and not self._sending

    def sending(self, update: StatusUpdate) -> None:
        """An attempt starts: write its "sending" update, unless the attempt ends before the write."""
        self._sending[update.key] = update
        self._pending.set()

    def attempted(self, outcome: Outcome) -> None:
        """An attempt ended: write its status updates and its ack, retry or dead letter."""
        self._sending.pop(outcome.entry.callback_id, None)
        record_outcome(self._batch, outcome)
        self._pending.set()
        if self._batch.count >= self.batch_size:
            self._now.set()

    def poison(self, entry: CallbackEntry, times: int, limit: int, now_ms: int) -> None:
        """Dead-letter an entry read ``times`` times without being settled (see :func:`record_poison`)."""
        self._sending.pop(entry.callback_id, None)
        record_poison(self._batch, entry, times, limit, now_ms)
        self._urgent()

    def expire(self, entry: CallbackEntry, why: str, max_age: float) -> None:
        """Dead-letter an entry its host held back too long (see :func:`record_expired`)."""
        self._sending.pop(entry.callback_id, None)
        record_expired(self._batch, entry, why, max_age, now_ms())
        self._urgent()

    def set_aside(self, records: list[Malformed]) -> None:
        """Move entries that are not callbacks to the dead letters with their reasons (the good ones go on)."""
        at = now_ms()
        for record in records:
            self._batch.aside(record, at)
            log.warning("set aside stream entry %s, which is not a callback: %s", record.stream_id, record.reason)
        if records:
            self._urgent()

    def defer(self, entry: CallbackEntry, seconds: float) -> None:
        """Park ``entry`` in the delayed set for ``seconds``, not as an attempt (its host is saturated)."""
        self._batch.delay(entry, seconds, "deferred")
        self._urgent()

    def hand_back(self, entry: CallbackEntry) -> None:
        """Re-add unstarted ``entry`` at the stream's tail with the next write (the leader steps down)."""
        self._batch.again(entry)
        self._pending.set()

    def _urgent(self) -> None:
        # A deferred or poison entry is no one's work in memory any more: write it without waiting for a batch.
        self._pending.set()
        self._now.set()

    async def run(self) -> None:
        """Write whatever is collected, for as long as the leader runs (cancel it to stop)."""
        while True:
            if self.empty:  # idle: sleep until something is collected, not every few ms
                self._pending.clear()
                await self._pending.wait()
            await wait_for_event(self._now, SETTLE_EVERY)  # gather for a moment, unless the batch is full
            self._now.clear()
            await self.flush(retries=0)

    async def flush(self, retries: int) -> None:
        """Write everything collected, trying ``retries`` more times; what still fails waits for the next write."""
        if self.empty:
            return
        batch, sending = self._batch, self._sending
        self._batch, self._sending = Settlement(), {}
        call = Settlement(batch.args, batch.count, [*sending.values(), *batch.updates]) if sending else batch
        for attempt in range(retries + 1):
            try:
                await self.stream.settle(call)
                return
            except (RedisError, OSError) as e:
                if attempt == retries:
                    # Keep the outcomes, ahead of newer ones; a kept "sending" may still be dropped.
                    self._batch.absorb(batch)
                    self._sending = {**sending, **self._sending}
                    log.warning("settle failed (%s); %d outcomes kept for the next try", e, self._batch.count)
                    await asyncio.sleep(RETRY_PAUSE)
                    return
                await asyncio.sleep(RETRY_PAUSE * (attempt + 1))
