"""The leader loop: the one consumer that paces and delivers a shard's callbacks.

While it holds the lease it runs six cooperating tasks on one event loop:

- intake (:mod:`.intake`): XREADGROUP new entries into per-host queues (a full
  host buffer defers);
- dispatch (here): reserve start slots from the global pace and start
  deliveries at their slot times, round-robin over hosts with a free slot
  whose own pace (:mod:`.adaptive`) lets them start; :mod:`.attempt` judges
  each attempt, and each answer teaches its host's pace;
- settle (:mod:`.settler`): write finished outcomes (ack, retry, dead letter)
  in one script call;
- housekeeping (:mod:`.housekeeping`): move due retries back, reclaim entries
  of silent consumers (poison ones go to the dead letters);
- renew (here): keep the lease, and stop taking new work the moment it is lost;
- config (here): follow the run-time configuration and reconfigure in place.

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

from ..config.runtime import RuntimeFollower
from ..config.settings import Settings
from ..delivery.policy import Action, parse_retry_after
from ..delivery.sender import Sender
from ..delivery.signing import SigningKeys
from ..streams.entry import CallbackEntry
from ..streams.host_book import HostBook
from ..streams.keys import Keys
from ..streams.lease import AsyncLease, lapsed
from ..streams.pace import Pace
from ..streams.status import now_ms
from ..streams.stream import CallbackStream
from . import attempt
from .adaptive import ceilings
from .backoff import back_off, wait_for_event
from .host_keeper import HostKeeper
from .hosts import HostQueues, host_limits
from .housekeeping import Housekeeper
from .intake import Intake
from .observer import DeliveryObserver
from .settler import Settler

log = logging.getLogger(__name__)

STOP_POLL = 0.05
LATE_SLOT = 0.005  # a start slot missed by more than this (and one interval) lapses unused
CONFIG_POLL = 0.25  # seconds between looks at the run-time configuration's version
STEP_DOWN_GRACE = 5.0  # seconds the leader's cancelled tasks get to end


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
        shard: int = 0,
        observer: DeliveryObserver | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        burst: bool = False,
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.namespace, settings.queue, shard)
        self.runtime = RuntimeFollower(settings, self.keys)  # run-time overrides apply on top of ``settings``
        self.stream = CallbackStream(client, self.keys)
        self.pace = Pace(client, self.keys.pace, settings.rate)
        self.lease = AsyncLease(client, self.keys.leader_lease, settings.lease_ttl)
        self.sender = sender
        self.observer = observer or DeliveryObserver()
        self.should_stop = should_stop
        buffer, min_share = host_limits(settings)
        self.queues = HostQueues(
            settings.host_concurrency,
            buffer,
            min_share,
            max_wait=settings.claim_idle / 3,
            ceiling=ceilings(settings),
            global_rate=settings.rate,
            adaptive=settings.adaptive,
            probe_interval=settings.circuit_probe,
        )
        self.host_keeper = HostKeeper(HostBook(client, self.keys), self.queues, self.observer)
        self._work = asyncio.Event()  # entries wait for dispatch
        self.settler = Settler(self.stream, settings.batch_size)
        self.intake = Intake(settings, self.stream, self.queues, self.settler, self.observer, work=self._work)
        housekeeping = (self.stream, self.intake, self.settler, self.observer)
        self.housekeeper = Housekeeper(settings, *housekeeping, lose=self._lose, burst=burst, hosts=self.host_keeper)
        self._client = client
        self._stopping = False
        self._lost = False
        self._deliveries: set[asyncio.Task[None]] = set()
        self.delivered = 0

    @property
    def consumer(self) -> str:
        """This leader's consumer name in the group (host, pid, token prefix)."""
        return self.lease.holder

    def fence(self) -> tuple[str, int]:
        """This leadership's lease token and epoch: a reclaim under an older one is refused."""
        return self.lease.token, self.lease.epoch

    async def run(self) -> LeaderExit:
        """Lead until told to stop, the lease is lost, or (burst mode) the queue is idle."""
        state = await self.lease.acquire()
        if not state.held:
            return LeaderExit("not_leader", state.epoch, 0)
        log.info("leading %s as %s (epoch %d)", self.keys.stream, self.consumer, state.epoch)
        self.observer.leading(self.settings.namespace, state.epoch, True)
        await self.stream.ensure_group()
        with contextlib.suppress(RedisError, OSError):  # without them, hosts are learned afresh
            await self.host_keeper.restore()
        if (settings := await self.runtime.poll_async(self._client)) is not None:
            self.reconfigure(settings)
        loops = {
            "intake": self.intake.run(self.consumer),  # first: stepping down waits for it (see _step_down)
            "dispatch": self._dispatch(),
            "settle": self.settler.run(),
            "housekeeping": self.housekeeper.run(self.consumer, self.fence),
            "renew": self._renew(),
            "config": self._config(),
        }
        workers = [asyncio.create_task(loop, name=f"leader-{name}") for name, loop in loops.items()]
        try:
            while not (self._stopping or self._lost or self.housekeeper.idle or self.should_stop()):
                await asyncio.sleep(STOP_POLL)
                for task in workers:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
        finally:
            self._stopping = True
            self.intake.stop()
            self._work.set()
            await self._step_down(workers)
            self.observer.leading(self.settings.namespace, self.lease.epoch, False)
        reason = "lost" if self._lost else "idle" if self.housekeeper.idle else "stopped"
        log.info(
            "stepped down from %s (%s, epoch %d, %d delivered)",
            self.keys.stream,
            reason,
            self.lease.epoch,
            self.delivered,
        )
        return LeaderExit(reason, self.lease.epoch, self.delivered)

    async def _step_down(self, workers: list[asyncio.Task[None]]) -> None:
        # Intake returns within one block period; the others only wait on events and are cancelled.
        # Every wait is bounded: a task that ignored its cancellation must not keep the process alive.
        for task in workers[1:]:
            task.cancel()
        await asyncio.wait(workers[:1], timeout=self.settings.max_delay + 3)
        workers[0].cancel()
        _, stuck = await asyncio.wait(workers, timeout=STEP_DOWN_GRACE)
        for task in stuck:
            log.error("leader task %s did not end when cancelled; stepping down without it", task.get_name())
        for task in workers:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a failure was already raised by run(), or ends with the term
        if self._deliveries:
            await asyncio.wait(set(self._deliveries), timeout=self.settings.timeout + 1)
        for entry in self.queues.drain():
            self.settler.hand_back(entry)
        await self.settler.flush(retries=5)
        if not self._lost:
            with contextlib.suppress(RedisError, OSError):
                await self.lease.release()

    # -- dispatch -----------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping:
            horizon = self.settings.min_interval
            startable = self.queues.startable()
            if startable == 0:
                self._work.clear()
                await wait_for_event(self._work, self.queues.next_ready())  # work, or a host's pace lets it start
                continue
            asked = loop.time()
            try:
                reservation = await self.pace.reserve(min(startable, self.settings.batch_size), horizon)
                failures = 0
            except (RedisError, OSError) as e:
                failures += 1
                await back_off("pace", e, failures)
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
            self.intake.wake()

    def _start(self, entry: CallbackEntry) -> None:
        task = asyncio.create_task(self._deliver(entry))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, entry: CallbackEntry) -> None:
        try:
            self.observer.sending(entry)
            self.settler.sending(attempt.sending(entry, now_ms()))
            result = await self.sender.send(entry)
            now = time.time()
            self.queues.learn(entry, result.status, result.error, parse_retry_after(result.retry_after, now), now)
            outcome = attempt.judge(self.settings, entry, result)
            self.settler.attempted(outcome)
            if outcome.decision.action is Action.DELIVERED:
                self.delivered += 1
            self.observer.attempted(entry, result, outcome.decision)
        except Exception:  # a bug here must not leak the host slot; the entry stays pending and is reclaimed
            log.exception("delivery of callback %s failed unexpectedly", entry.callback_id)
        finally:
            self.queues.done(entry)
            self._work.set()

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
                if lapsed(last_ok, time.monotonic(), self.settings.lease_ttl):
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
        async for settings in self.runtime.changes(self._client, every=CONFIG_POLL):
            self.reconfigure(settings)

    def reconfigure(self, settings: Settings) -> None:
        """Use ``settings`` from now on: pace, batch size, per-host concurrency, buffers, signing keys."""
        self.settings = self.intake.settings = self.housekeeper.settings = settings
        self.pace = Pace(self._client, self.keys.pace, settings.rate)
        self.queues.reshape(settings.host_concurrency, *host_limits(settings))
        self.queues.recast(ceilings(settings), settings.rate, settings.adaptive)
        self.settler.batch_size = settings.batch_size
        self.sender.use_keys(SigningKeys.from_settings(settings))
        self._work.set()
        self.intake.wake()
