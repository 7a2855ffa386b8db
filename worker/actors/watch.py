"""Keeps the lease-holding actors alive without cron: every worker process watches the leases.

Two actors hold a lease for as long as they run: the leader of each shard
(``lead_callbacks(shard)``) and the status writer (``write_statuses``). Every
worker process runs one :class:`LeaseWatch` thread: when a lease is free (its
holder was killed, or none ever started), the first process to notice sends
one message to the actor, debounced by an election key. The actors also
re-send their own message when they end for any reason but shutdown.

For the shards, each look also refreshes this process's entry in the fleet
(:mod:`worker.streams.fleet`), hands the fresh view to the process's
:class:`~worker.engine.conductor.Conductor` (which decides where terms run),
and watches every shard that may hold work: those below ``CALLBACK_SHARDS``,
and those above it (the count was lowered) while they still hold callbacks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass

import redis
from dramatiq import Broker, Middleware, Worker

from ..config.settings import Settings
from ..engine.conductor import Conductor
from ..streams import fleet
from ..streams.client import sync_client
from ..streams.keys import Keys, LeaseKeys
from ..streams.protocol import Batch, Command, Operation, SyncDriver
from ..streams.shards import counts_in_use, record_count
from ..streams.status import now_ms

log = logging.getLogger(__name__)

LEADER_ACTOR = "lead_callbacks"
MIN_THREADS = 3  # the leader's, the status writer's, and one for image tasks
FOREVER_MS = 10 * 365 * 24 * 3600 * 1000  # a lease holder runs until shutdown: the TimeLimit middleware must not cut it


@dataclass(frozen=True)
class WatchedLease:
    """An actor that runs while it holds ``lease``; ``election_key`` debounces starting it."""

    actor: str
    lease: LeaseKeys
    election_key: str
    args: tuple[int, ...] = ()


class LeaseWatch(Middleware):
    """Dramatiq middleware: a thread per worker process that sends each watched actor when its lease is free."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.leases: list[WatchedLease] = []
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conductor: Conductor | None = None
        self._keys = Keys(settings.namespace, settings.queue)
        self._recorded = False  # this process's shard count is noted in Redis with its first look

    def watch(self, actor: str, *, lease: LeaseKeys, election_key: str) -> None:
        """Keep ``actor`` running: send it whenever its ``lease`` is free."""
        self.leases.append(WatchedLease(actor, lease, election_key))

    def conduct(self, conductor: Conductor) -> None:
        """Keep every shard led, through ``conductor`` (this process's terms) and the fleet."""
        self._conductor = conductor

    @property
    def conductor(self) -> Conductor | None:
        """This process's shard leaderships and its view of the fleet (``None`` before :meth:`conduct`)."""
        return self._conductor

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        if worker.worker_threads < MIN_THREADS:
            log.warning(
                "this worker process has %d threads: the leader and the status writer each hold one while they "
                "run, so image tasks may wait; start dramatiq with --threads %d or more",
                worker.worker_threads,
                MIN_THREADS,
            )
        self.stopping.clear()
        self._thread = threading.Thread(target=self._watch, args=(broker,), name="lease-watch", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self.stopping.set()

    def _watch(self, broker: Broker) -> None:
        client = sync_client(self.settings.redis_url, retries=0)
        driver = SyncDriver(client)
        period = min(1.0, self.settings.lease_ttl / 4)
        while not self.stopping.wait(period):
            free: list[WatchedLease] = []  # shard leases just seen free: not asked again
            if self._conductor is not None:
                try:
                    free = self.free_shards(driver, self._conductor)
                except redis.RedisError as e:
                    log.warning("shard watch: Redis unavailable (%s); will look again", e)
            for watched in [*self.leases, *free]:
                try:
                    self.check(client, broker, watched, seen_free=watched in free)
                except redis.RedisError as e:
                    log.warning("%s watch: Redis unavailable (%s); will look again", watched.actor, e)
        if self._conductor is not None:
            with contextlib.suppress(redis.RedisError):  # else the entry ages out of the fleet by itself
                driver.run(fleet.leave(self._keys, self._conductor.here))
        client.close()

    def free_shards(self, driver: SyncDriver, conductor: Conductor) -> list[WatchedLease]:
        """Refresh the fleet and let ``conductor`` rebalance; the leases of shards that need a leader now."""
        if not self._recorded and self.settings.shards > 1:
            driver.run(record_count(self._keys, self.settings.shards))
            self._recorded = True
        conductor.fleet = driver.run(fleet.beat(self._keys, conductor.here, len(conductor.shards), now_ms()))
        conductor.balance()  # it only marks a term for handing over: safe from this thread
        shards = self._keys.shards(driver.run(counts_in_use(self._keys, self.settings.shards)))
        held = driver.run(_exist([keys.lease for keys in shards]))
        free = [keys for keys, taken in zip(shards, held, strict=True) if not taken]
        draining = [keys for keys in free if keys.shard >= self.settings.shards]  # led only while they hold work
        if draining:
            work = driver.run(_exist([key for keys in draining for key in (keys.stream, keys.delayed)]))
            idle = {keys.shard for keys, *found in zip(draining, work[::2], work[1::2], strict=True) if not any(found)}
            free = [keys for keys in free if keys.shard not in idle]
        return [WatchedLease(LEADER_ACTOR, keys.leader_lease, keys.election, (keys.shard,)) for keys in free]

    def check(self, client: redis.Redis, broker: Broker, watched: WatchedLease, *, seen_free: bool = False) -> bool:
        """Send the actor's message if its lease is free and no other process just did; returns whether it sent."""
        if not seen_free and client.exists(watched.lease.lease):
            return False
        ttl_ms = int(self.settings.lease_ttl * 1000)
        if not client.set(watched.election_key, str(os.getpid()), nx=True, px=ttl_ms):
            return False
        broker.get_actor(watched.actor).send(*watched.args)
        log.info("%s is free: sent %s%s", watched.lease.lease, watched.actor, watched.args or "")
        return True


def _exist(keys: list[str]) -> Operation[list[bool]]:
    """Operation: whether each of ``keys`` exists, in one round trip (keys of several slots: no transaction)."""
    replies = yield Batch(tuple(Command("exists", (key,)) for key in keys))
    return [bool(reply) for reply in replies]
