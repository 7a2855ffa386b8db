"""The leader loop: the one consumer that paces and delivers a queue's callbacks.

While it holds the lease it runs five cooperating tasks on one event loop:

- intake: XREADGROUP new entries into per-host queues (a full host buffer defers);
- dispatch: reserve start slots from the global pace and start deliveries at
  their slot times, round-robin over hosts with a free slot;
- settle: apply finished outcomes (ack, retry, dead letter) in one script call;
- housekeeping: move due retries back, reclaim entries of silent consumers
  (poison ones go to the dead letters);
- renew: keep the lease, and stop taking new work the moment it is lost.

On stop it finishes in-flight deliveries, hands unstarted entries back to the
stream, settles, and releases the lease so the next leader starts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..config import runtime as runtime_config
from ..config.settings import Settings
from ..delivery.policy import Action, Decision, decide, parse_retry_after, retry_pause
from ..delivery.sender import AttemptResult, Sender
from ..delivery.signing import SigningKeys
from ..errors import LeaseLost, StreamGone, WorkerError
from ..streams import status
from ..streams.entry import CallbackEntry
from ..streams.keys import Keys
from ..streams.lease import LeaderLease
from ..streams.pace import Pace
from ..streams.settlement import Settlement
from ..streams.stream import CallbackStream
from .attempt import record_outcome, record_poison
from .hosts import HostQueues
from .observer import DeliveryObserver

log = logging.getLogger(__name__)

SETTLE_EVERY = 0.005  # seconds between settle round trips while outcomes arrive
STOP_POLL = 0.05
MAX_BACKOFF = 2.0
LATE_SLOT = 0.005  # a start slot missed by more than this (and one interval) lapses unused
DEFER_SECONDS = 1.0  # how long a callback of a saturated host waits before it is read again
CONFIG_POLL = 0.25  # seconds between looks at the run-time configuration's version


@dataclass(frozen=True)
class LeaderExit:
    """Why :meth:`Leader.run` returned: ``not_leader``, ``stopped``, ``lost`` or ``idle`` (burst mode)."""

    reason: str
    epoch: int
    delivered: int


class Leader:
    """Runs one leadership of one queue; create a new one for each term."""

    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        sender: Sender,
        *,
        observer: DeliveryObserver | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        burst: bool = False,
    ) -> None:
        self.base = settings  # from the environment; run-time overrides apply on top of it
        self.settings = settings
        self.config_version = 0
        self.keys = Keys(settings.namespace, settings.queue)
        self.stream = CallbackStream(client, self.keys)
        self.pace = Pace(client, self.keys.pace, settings.rate)
        self.lease = LeaderLease(client, self.keys, settings.lease_ttl)
        self.sender = sender
        self.observer = observer or DeliveryObserver()
        self.should_stop = should_stop
        self.burst = burst
        buffer, min_share = _host_limits(settings)
        self.queues = HostQueues(settings.host_concurrency, buffer, min_share, max_wait=settings.claim_idle / 3)
        self._client = client
        self._settlement = Settlement()
        self._work = asyncio.Event()
        self._space = asyncio.Event()
        self._settle_now = asyncio.Event()  # the settlement is full: write it now
        self._to_settle = asyncio.Event()  # the settlement is no longer empty
        self._stopping = False
        self._lost = False
        self._idle = False
        self._deliveries: set[asyncio.Task[None]] = set()
        self.delivered = 0

    @property
    def consumer(self) -> str:
        """This leader's consumer name in the group (host, pid, token prefix)."""
        return self.lease.holder

    async def run(self) -> LeaderExit:
        """Lead until told to stop, the lease is lost, or (burst mode) the queue is idle."""
        state = await self.lease.acquire()
        if not state.held:
            return LeaderExit("not_leader", state.epoch, 0)
        log.info("leading %s as %s (epoch %d)", self.keys.stream, self.consumer, state.epoch)
        self.observer.leading(self.settings.namespace, state.epoch, True)
        await self.stream.ensure_group()
        await self._reload_config()
        workers = [
            asyncio.create_task(loop(), name=f"leader-{loop.__name__}")
            for loop in (self._intake, self._dispatch, self._settle_loop, self._housekeeping, self._renew, self._config)
        ]
        try:
            while not (self._stopping or self._lost or self._idle or self.should_stop()):
                await asyncio.sleep(STOP_POLL)
                for task in workers:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
        finally:
            self._stopping = True
            self._work.set()
            self._space.set()
            await self._step_down(workers)
            self.observer.leading(self.settings.namespace, self.lease.epoch, False)
        reason = "lost" if self._lost else "idle" if self._idle else "stopped"
        log.info(
            "stepped down from %s (%s, epoch %d, %d delivered)",
            self.keys.stream,
            reason,
            self.lease.epoch,
            self.delivered,
        )
        return LeaderExit(reason, self.lease.epoch, self.delivered)

    async def _step_down(self, workers: list[asyncio.Task[None]]) -> None:
        # Intake returns within one block period; the others only wait on events.
        for task in workers[1:]:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, RedisError, asyncio.TimeoutError):
            await asyncio.wait_for(workers[0], timeout=self.settings.max_delay + 3)
        for task in workers[1:]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._deliveries:
            await asyncio.wait(set(self._deliveries), timeout=self.settings.timeout + 1)
        for entry in self.queues.drain():
            self._settlement.again(entry)
        await self._flush(retries=5)
        if not self._lost:
            with contextlib.suppress(RedisError, OSError):
                await self.lease.release()

    # -- intake -------------------------------------------------------------------------------

    async def _intake(self) -> None:
        block = min(self.settings.max_delay, 2.0)
        failures = 0
        while not self._stopping:
            self._shed()
            room = self.queues.buffer - self.queues.waiting
            if room <= 0:
                self._space.clear()
                await self._space.wait()
                continue
            try:
                entries = await self.stream.read(self.consumer, min(room, self.settings.batch_size), block)
                failures = 0
            except StreamGone:  # deleted by ops reset, before or during the read: start over
                await self.stream.ensure_group()
                continue
            except (RedisError, OSError) as e:
                failures += 1
                await self._backoff("read", e, failures)
                continue
            self._accept(entries)

    def _accept(self, entries: list[CallbackEntry]) -> None:
        for entry in entries:
            if self.queues.holds(entry.stream_id):
                continue
            if not self.queues.offer(entry):
                self._defer(entry)
        if entries:
            self._work.set()

    def _shed(self) -> None:
        shed = self.queues.shed()
        for entry in shed:
            self._defer(entry)
        if shed:
            self._space.set()

    def _defer(self, entry: CallbackEntry) -> None:
        # Its host is saturated (or it waited too long): park it in the delayed set, not as an attempt.
        self._settlement.delay(entry, DEFER_SECONDS, "deferred")
        self._to_settle.set()
        self._settle_now.set()
        self.observer.deferred(entry)

    # -- dispatch -----------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping:
            horizon = self.settings.min_interval
            startable = self.queues.startable()
            if startable == 0:
                self._work.clear()
                await self._work.wait()
                continue
            asked = loop.time()
            try:
                reservation = await self.pace.reserve(min(startable, self.settings.batch_size), horizon)
                failures = 0
            except (RedisError, OSError) as e:
                failures += 1
                await self._backoff("pace", e, failures)
                continue
            if reservation.granted == 0:
                pause = max(0.001, reservation.offset - horizon)
                self.observer.waited_for_pace(pause)
                await asyncio.sleep(pause)
                continue
            late_limit = max(reservation.interval, LATE_SLOT)
            for index in range(reservation.granted):
                wait = asked + reservation.slot(index) - loop.time()
                if wait > 0.0005:
                    self.observer.waited_for_pace(wait)
                    await asyncio.sleep(wait)
                elif wait < -late_limit:
                    continue  # woke too late for this slot: it lapses, or the late starts would bunch
                if self._stopping or self._lost:
                    return
                entry = self.queues.take()
                if entry is None:
                    break  # hosts filled up meanwhile: the rest of the slots lapse unused
                self._start(entry)
            self._space.set()

    def _start(self, entry: CallbackEntry) -> None:
        task = asyncio.create_task(self._deliver(entry))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, entry: CallbackEntry) -> None:
        try:
            self.observer.sending(entry)
            self._settlement.record_sending(status.callback_sending(entry.callback_id, entry.attempts + 1, _ms()))
            self._to_settle.set()
            result = await self.sender.send(entry)
            decision = self._decide(entry, result)
            self._record(entry, result, decision)
            self.observer.attempted(entry, result, decision)
        except Exception:  # a bug here must not leak the host slot; the entry stays pending and is reclaimed
            log.exception("delivery of callback %s failed unexpectedly", entry.callback_id)
        finally:
            self.queues.done(entry)
            self._work.set()

    def _decide(self, entry: CallbackEntry, result: AttemptResult) -> Decision:
        settings = self.settings
        return decide(
            status=result.status,
            error=result.error,
            attempts_made=entry.attempts + 1,
            max_attempts=settings.max_attempts,
            schedule=settings.retry_schedule,
            retry_after=parse_retry_after(result.retry_after, time.time()),
            retry_after_max=settings.retry_after_max,
        )

    def _record(self, entry: CallbackEntry, result: AttemptResult, decision: Decision) -> None:
        record_outcome(self._settlement, entry, result, decision, _ms())
        self._to_settle.set()
        if decision.action is Action.DONE:
            self.delivered += 1
        if self._settlement.count >= self.settings.batch_size:
            self._settle_now.set()

    # -- settle -------------------------------------------------------------------------------

    async def _settle_loop(self) -> None:
        while True:
            if self._settlement.empty:  # idle: sleep until something is recorded, not every few ms
                self._to_settle.clear()
                await self._to_settle.wait()
            with contextlib.suppress(asyncio.TimeoutError):  # gather for a moment, unless the batch is full
                await asyncio.wait_for(self._settle_now.wait(), timeout=SETTLE_EVERY)
            self._settle_now.clear()
            await self._flush(retries=0)

    async def _flush(self, retries: int) -> None:
        if self._settlement.empty:
            return
        batch, self._settlement = self._settlement, Settlement()
        for attempt in range(retries + 1):
            try:
                await self.stream.settle(batch)
                return
            except (RedisError, OSError) as e:
                if attempt == retries:
                    # Keep the outcomes, ahead of newer ones: they go with the next flush.
                    self._settlement.absorb(batch)
                    log.warning("settle failed (%s); %d outcomes kept for the next try", e, self._settlement.count)
                    await asyncio.sleep(0.1)
                    return
                await asyncio.sleep(0.1 * (attempt + 1))

    # -- housekeeping -------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self._promote_due()
                self._shed()
                await self._reclaim()
                snapshot = await self.stream.snapshot()
                self.observer.sampled(snapshot, self.queues.in_flight, self.queues.saturated_hosts())
                if self.burst:
                    self._idle = await self._queue_idle()
                failures = 0
            except (RedisError, OSError) as e:
                failures += 1
                await self._backoff("housekeeping", e, failures)
                continue
            await asyncio.sleep(self.settings.max_delay if not self.burst else 0.05)

    async def _promote_due(self) -> None:
        limit = self.settings.batch_size * 10
        while True:
            moved, _ = await self.stream.promote_due(limit)
            if moved < limit:
                return

    async def _reclaim(self) -> None:
        try:
            reclaimed = await self.stream.reclaim(
                self.consumer, self.settings.claim_idle, fence=(self.lease.token, self.lease.epoch)
            )
        except LeaseLost as e:
            self._lose(str(e))
            return
        limit = self.settings.max_deliveries
        live = []
        for entry in reclaimed.entries:
            if self.queues.holds(entry.stream_id):
                continue  # ours, still waiting in memory
            times = reclaimed.deliveries.get(entry.stream_id or "", 1)
            if times <= limit:
                live.append(entry)
                continue
            record_poison(self._settlement, entry, times, limit, _ms())
            self._to_settle.set()
            self._settle_now.set()
        if live:
            log.info("reclaimed %d pending callbacks from silent consumers", len(live))
            self._accept(live)

    async def _queue_idle(self) -> bool:
        if self.queues.waiting or self.queues.in_flight or not self._settlement.empty:
            return False
        pipe = self._client.pipeline(transaction=False)
        pipe.xlen(self.keys.stream)
        pipe.zcard(self.keys.delayed)
        length, delayed = await pipe.execute()
        return int(length) == 0 and int(delayed) == 0

    # -- lease --------------------------------------------------------------------------------

    async def _renew(self) -> None:
        period = self.settings.lease_ttl / 3
        last_ok = time.monotonic()
        while not self._stopping:
            await asyncio.sleep(period)
            try:
                state = await self.lease.renew()
            except (RedisError, OSError) as e:
                log.warning("lease renewal failed: %s", e)
                if time.monotonic() - last_ok >= self.settings.lease_ttl:
                    self._lose("the lease expired while Redis was unreachable")
                continue
            if not state.held:
                self._lose(f"another leader holds it (epoch {state.epoch})")
            last_ok = time.monotonic()

    def _lose(self, why: str) -> None:
        log.warning("lost leadership of %s: %s; finishing in-flight deliveries", self.keys.stream, why)
        self._lost = True
        self._work.set()

    # -- run-time configuration ---------------------------------------------------------------

    async def _config(self) -> None:
        while not self._stopping:
            await asyncio.sleep(CONFIG_POLL)
            try:
                await self._reload_config()
            except (RedisError, OSError) as e:
                log.warning("run-time configuration not read (%s); keeping the current one", e)

    async def _reload_config(self) -> None:
        config = runtime_config.parse(await self._client.get(self.keys.config))
        if config.version == self.config_version:
            return
        try:
            settings = runtime_config.apply(self.base, config.values)
        except WorkerError as e:  # refused when stored; a bad value that got in anyway changes nothing
            log.error("run-time configuration version %d refused, keeping the current one: %s", config.version, e)
        else:
            self.reconfigure(settings)
            log.info("applied run-time configuration version %d: %s", config.version, config.shown())
        self.config_version = config.version

    def reconfigure(self, settings: Settings) -> None:
        """Use ``settings`` from now on: pace, batch size, per-host concurrency, buffers, signing keys."""
        self.settings = settings
        self.pace = Pace(self._client, self.keys.pace, settings.rate)
        self.queues.reshape(settings.host_concurrency, *_host_limits(settings))
        self.sender.use_keys(SigningKeys(settings.signing_secret, settings.signing_secrets))
        self._work.set()
        self._space.set()

    async def _backoff(self, what: str, error: BaseException, failures: int) -> None:
        delay = retry_pause(failures, cap=MAX_BACKOFF)
        log.warning("%s failed (%s: %s); retrying in %.2fs", what, type(error).__name__, error, delay)
        await asyncio.sleep(delay)


def _ms() -> int:
    return int(time.time() * 1000)


def _host_limits(settings: Settings) -> tuple[int, int]:
    """Entries waiting in memory at most, and the share a saturated host may always keep."""
    # At the global rate a full buffer drains in a sixth of the claim idle time,
    # well inside the hosts' shedding age (a third), so healthy work is not shed.
    by_rate = int(settings.rate * settings.claim_idle / 6)
    buffer = max(1, min(2 * settings.batch_size, by_rate))
    return buffer, min(buffer, 2 * settings.host_concurrency)
