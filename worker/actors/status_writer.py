"""The status writer actor, and the middleware that keeps one running without cron.

``write_statuses`` runs :func:`worker.storage.service.run_status_writer` on a
Dramatiq worker thread for as long as it holds the writer lease (so a worker
needs ``--threads`` >= 2 to run it beside the leader). Every worker process
runs a lease watch thread: when the lease is free, the first
process to notice sends one ``write_statuses`` message, debounced by the
``writer:vote`` key (see :mod:`worker.actors.watch`). Wiring, in ``worker/actors/__init__.py``::

    from .status_writer import declare as declare_status_writer
    write_statuses = declare_status_writer(broker, settings, watch)
"""

from __future__ import annotations

import logging
import time

import dramatiq
import redis
from dramatiq import Broker

from ..config.settings import Settings
from ..storage.service import run_status_writer
from ..streams.client import sync_client
from ..streams.keys import Keys
from ..streams.lease import holder_of, parse_holder
from ..streams.status import now_ms
from .broker import queue_name
from .watch import FOREVER_MS, LeaseWatch

log = logging.getLogger(__name__)

STATUS_WRITER_ACTOR = "write_statuses"
STATUS_QUEUE = "status"
DEFER_MS = 250  # a writer message that landed in the leader's process goes back for another process
MAX_DEFERRALS = 20  # then (about 5 s) it runs wherever it is: a single-process worker needs a writer too
LIVE_WITHIN_MS = 10_000  # a Dramatiq worker process fetches at least every second while it runs
CHECK_EVERY = 2.0  # seconds between looks at where the leader runs


class Placement:
    """Whether this process leads the callbacks while other worker processes of the namespace are alive.

    Leader and writer are both CPU-bound Python: sharing one process (one GIL)
    each slows the other, so the writer keeps out of the leader's process when
    another process can take it. Looked up at most every ``CHECK_EVERY`` seconds.
    """

    def __init__(self, settings: Settings, keys: Keys) -> None:
        self._client = sync_client(settings.redis_url, retries=0)
        self._keys = keys
        self._checked = float("-inf")
        self._crowded = False

    def crowded(self) -> bool:
        now = time.monotonic()
        if now - self._checked >= CHECK_EVERY:
            self._crowded, self._checked = self._look(), now
        return self._crowded

    def _look(self) -> bool:
        try:
            leader = parse_holder(holder_of(self._client, self._keys.leader_lease))
            if leader is None or not leader.here:
                return False
            now = now_ms()
            heartbeats = f"{self._keys.dramatiq_namespace}:__heartbeats__"  # Dramatiq's: one member per process
            return int(self._client.zcount(heartbeats, now - LIVE_WITHIN_MS, "+inf")) > 1
        except redis.RedisError:
            return False

    def close(self) -> None:
        self._client.close()


def declare(broker: Broker, settings: Settings, watch: LeaseWatch) -> dramatiq.Actor:  # type: ignore[type-arg]
    """Declare ``write_statuses`` on ``broker``, kept alive by ``watch``."""
    keys = Keys(settings.namespace, settings.queue)
    watch.watch(STATUS_WRITER_ACTOR, lease=keys.writer_lease, election_key=keys.status_election)

    def write_statuses(deferrals: int = 0) -> None:
        """Write status updates to the database until shutdown, until the lease is lost, or until it should move."""
        log.debug("write_statuses ended: %s", write(deferrals))  # None returned: Dramatiq keeps no results

    def write(deferrals: int) -> str:
        placement = Placement(settings, keys)
        may_move = deferrals < MAX_DEFERRALS  # after that, it stays wherever it is (one process needs a writer too)
        try:
            if may_move and placement.crowded():
                actor.send_with_options(args=(deferrals + 1,), delay=DEFER_MS)
                return "deferred"
            moving = False

            def should_stop() -> bool:
                nonlocal moving
                moving = may_move and placement.crowded()  # the leader moved in: make room
                return watch.stopping.is_set() or moving

            outcome = run_status_writer(settings, should_stop=should_stop)
        finally:
            placement.close()
        if watch.stopping.is_set():
            return outcome
        if moving:
            actor.send_with_options(args=(1,), delay=DEFER_MS)
            return "moved"
        if outcome == "lost":
            actor.send()  # keep a candidate in circulation
        return outcome

    decorate = dramatiq.actor(
        actor_name=STATUS_WRITER_ACTOR,
        broker=broker,
        max_retries=0,
        time_limit=FOREVER_MS,
        queue_name=queue_name(settings, STATUS_QUEUE),
    )
    actor: dramatiq.Actor = decorate(write_statuses)  # type: ignore[type-arg]
    return actor
