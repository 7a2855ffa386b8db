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

import dramatiq
from dramatiq import Broker

from ..keys import Keys
from ..settings import Settings
from ..storage.service import run_status_writer
from .watch import LeaseWatch

STATUS_WRITER_ACTOR = "write_statuses"
STATUS_QUEUE = "status"
FOREVER_MS = 10 * 365 * 24 * 3600 * 1000  # writes until shutdown; the TimeLimit middleware must not cut it


def declare(broker: Broker, settings: Settings, watch: LeaseWatch) -> dramatiq.Actor:  # type: ignore[type-arg]
    """Declare ``write_statuses`` on ``broker``, kept alive by ``watch``."""
    keys = Keys(settings.namespace, settings.queue)
    watch.watch(STATUS_WRITER_ACTOR, lease_key=keys.status_lease, election_key=keys.status_election)

    def write_statuses() -> str:
        """Write status updates to the database until shutdown or until the lease is lost."""
        outcome = run_status_writer(settings, should_stop=watch.stopping.is_set)
        if outcome == "lost" and not watch.stopping.is_set():
            actor.send()  # keep a candidate in circulation
        return outcome

    decorate = dramatiq.actor(
        actor_name=STATUS_WRITER_ACTOR, broker=broker, max_retries=0, time_limit=FOREVER_MS, queue_name=STATUS_QUEUE
    )
    actor: dramatiq.Actor = decorate(write_statuses)  # type: ignore[type-arg]
    return actor
