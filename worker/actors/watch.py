"""Keeps a leader alive without cron: every worker process watches the lease.

When the lease is free (a leader was killed, or none ever started), the first
process to notice sends one ``lead_callbacks`` message, debounced by the
``election`` key. The leader actor itself also re-sends its message when it
ends for any reason but shutdown.
"""

from __future__ import annotations

import logging
import os
import threading

import redis
from dramatiq import Broker, Middleware, Worker

from ..keys import Keys
from ..redis_client import sync_client
from ..settings import Settings

log = logging.getLogger(__name__)

LEADER_ACTOR = "lead_callbacks"


class LeaderWatch(Middleware):
    """Dramatiq middleware: a thread per worker process that starts a leader when there is none."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.namespace, settings.queue)
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self.stopping.clear()
        self._thread = threading.Thread(target=self._watch, args=(broker,), name="leader-watch", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self.stopping.set()

    def _watch(self, broker: Broker) -> None:
        client = sync_client(self.settings.redis_url, retries=0)
        period = min(1.0, self.settings.lease_ttl / 4)
        while not self.stopping.wait(period):
            try:
                self.check(client, broker)
            except redis.RedisError as e:
                log.warning("leader watch: Redis unavailable (%s); will look again", e)
        client.close()

    def check(self, client: redis.Redis, broker: Broker) -> bool:
        """Send a leader message if the lease is free and no other process just did; returns whether it sent."""
        if client.exists(self.keys.lease):
            return False
        ttl_ms = int(self.settings.lease_ttl * 1000)
        if not client.set(self.keys.election, str(os.getpid()), nx=True, px=ttl_ms):
            return False
        broker.get_actor(LEADER_ACTOR).send()
        log.info("no leader for %s: sent %s", self.keys.stream, LEADER_ACTOR)
        return True
