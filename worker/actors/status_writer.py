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

import dramatiq
from dramatiq import Broker

from ..config.settings import Settings
from ..storage.service import run_status_writer
from ..streams.keys import Keys
from .broker import queue_name
from .watch import FOREVER_MS, LeaseWatch

log = logging.getLogger(__name__)

STATUS_WRITER_ACTOR = "write_statuses"
STATUS_QUEUE = "status"
DEFER_MS = 250  # a writer message that landed in the leader's process goes back for another process
MAX_DEFERRALS = 20  # then (about 5 s) it runs wherever it is: a single-process worker needs a writer too


class Placement:
    """Whether this process leads more shards than some other live worker process of the namespace.

    Leader and writer are both CPU-bound Python: sharing one process (one GIL)
    each slows the other, so the writer keeps out of a leader's process when a
    process leading fewer shards can take it. Read from the lease watch's view
    of the fleet (refreshed every look), so it costs no Redis call.
    """

    def __init__(self, watch: LeaseWatch) -> None:
        self._watch = watch

    def crowded(self) -> bool:
        conductor = self._watch.conductor
        if conductor is None or not conductor.shards:
            return False
        mine = len(conductor.shards)
        return any(led < mine for name, led in conductor.fleet.items() if name != conductor.here)


def declare(broker: Broker, settings: Settings, watch: LeaseWatch) -> dramatiq.Actor:  # type: ignore[type-arg]
    """Declare ``write_statuses`` on ``broker``, kept alive by ``watch``."""
    keys = Keys(settings.namespace, settings.queue)
    watch.watch(STATUS_WRITER_ACTOR, lease=keys.writer_lease, election_key=keys.status_election)

    def write_statuses(deferrals: int = 0) -> None:
        """Write status updates to the database until shutdown, until the lease is lost, or until it should move."""
        log.debug("write_statuses ended: %s", write(deferrals))  # None returned: Dramatiq keeps no results

    def write(deferrals: int) -> str:
        placement = Placement(watch)
        may_move = deferrals < MAX_DEFERRALS  # after that, it stays wherever it is (one process needs a writer too)
        if may_move and placement.crowded():
            actor.send_with_options(args=(deferrals + 1,), delay=DEFER_MS)
            return "deferred"
        moving = False

        def should_stop() -> bool:
            nonlocal moving
            moving = may_move and placement.crowded()  # a leader moved in: make room
            return watch.stopping.is_set() or moving

        outcome = run_status_writer(settings, should_stop=should_stop)
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
