"""Keeps a lease-holding actor alive without cron: every worker process watches the lease.

Two actors hold a lease for as long as they run: the leader (``lead_callbacks``)
and the status writer (``write_statuses``). For each, every worker process
runs one :class:`LeaseWatch` thread: when a lease is free (its holder was
killed, or none ever started), the first process to notice sends one message
to the actor, debounced by an election key. The actors also re-send their own
message when they end for any reason but shutdown.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import redis
from dramatiq import Broker, Middleware, Worker

from ..config.settings import Settings
from ..streams.client import sync_client
from ..streams.keys import LeaseKeys

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


class LeaseWatch(Middleware):
    """Dramatiq middleware: a thread per worker process that sends each watched actor when its lease is free."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.leases: list[WatchedLease] = []
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, actor: str, *, lease: LeaseKeys, election_key: str) -> None:
        """Keep ``actor`` running: send it whenever its ``lease`` is free."""
        self.leases.append(WatchedLease(actor, lease, election_key))

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
        period = min(1.0, self.settings.lease_ttl / 4)
        while not self.stopping.wait(period):
            for watched in self.leases:
                try:
                    self.check(client, broker, watched)
                except redis.RedisError as e:
                    log.warning("%s watch: Redis unavailable (%s); will look again", watched.actor, e)
        client.close()

    def check(self, client: redis.Redis, broker: Broker, watched: WatchedLease) -> bool:
        """Send the actor's message if its lease is free and no other process just did; returns whether it sent."""
        if client.exists(watched.lease.lease):
            return False
        ttl_ms = int(self.settings.lease_ttl * 1000)
        if not client.set(watched.election_key, str(os.getpid()), nx=True, px=ttl_ms):
            return False
        broker.get_actor(watched.actor).send()
        log.info("%s is free: sent %s", watched.lease.lease, watched.actor)
        return True
