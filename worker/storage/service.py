"""Running the status writer: one lease-holding writer per queue, wired to its connections.

Why one writer and not one per process in the same consumer group: "last
write wins" means stream order, and consumers of one group each get a slice
of the stream and commit in whatever order they finish — a ``sending`` could
land after the ``retrying`` that followed it. A single writer commits in stream
order, and at 1,000 rows per statement it has room to spare. The lease is
short (``CALLBACK_LEASE_TTL``) and every worker process watches it (see
``worker.actors.status_writer``), so a dead writer is replaced within seconds;
its successor first claims whatever it left pending.

With shards (``CALLBACK_SHARDS``) the one lease covers every shard's status
stream: its holder runs a writer per shard, each in stream order (see :mod:`.shards`).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from ..config.settings import Settings
from ..streams.client import REDIS_ERRORS, sync_client
from ..streams.keys import Keys
from ..streams.lease import Lease, lapsed
from ..streams.protocol import SyncDriver
from ..streams.shards import record_count
from .entries import reason
from .migrate import SchemaOutdated, ensure_schema
from .shards import SHARD_RECHECK, ShardWriters, shared_engine

log = logging.getLogger(__name__)

SCHEMA_RECHECK = 10.0  # seconds between looks at an outdated schema


class Tenure:
    """The writer's hold on its lease: renewed every third of its TTL, lost once a whole TTL passed unrenewed.

    One thread renews (:meth:`keep`); any thread may ask :meth:`held`. Once lost, it stays lost.
    """

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self._renewed = time.monotonic()  # taken just now
        self._lost = False

    def keep(self) -> bool:
        """Renew when due; ``False`` once another writer may hold the lease (lost, or unrenewed for a whole TTL)."""
        if self._lost:
            return False
        now = time.monotonic()
        if now - self._renewed < self.lease.ttl / 3:
            return True
        try:
            state = self.lease.renew()
        except REDIS_ERRORS as e:
            log.warning("status writer lease renewal failed: %s", e)
            self._lost = lapsed(self._renewed, now, self.lease.ttl)
            return not self._lost
        if not state.held:
            log.warning("status writer %s lost its lease", self.lease.holder)
            self._lost = True
            return False
        self._renewed = now
        return True

    def held(self) -> bool:
        """Whether the lease is still ours as of the last renewal; never calls Redis (the writers' threads ask)."""
        return not self._lost and not lapsed(self._renewed, time.monotonic(), self.lease.ttl)


def settle_heap() -> None:
    """Collect, then freeze what is alive (:func:`gc.freeze`): later full collections skip it.

    Without it a full (generation 2) collection walks every object of the
    process (SQLAlchemy, the models, the drivers) and, run in the middle of a
    flush, became its p99: ``bench/status_bench.py`` measured collections of up to
    57-94 ms and a 1,000-row PostgreSQL flush p99 of 60-131 ms; 3-4 ms and 28-49 ms with it.
    What is alive at start mostly stays alive (modules, the engine, the client);
    the writer unfreezes when its tenure ends (:func:`gc.unfreeze`), so what
    died meanwhile (a leader's objects, in a process that runs both) is collected then.
    """
    gc.collect()
    gc.freeze()


def _release(lease: Lease) -> None:
    """Give the lease up so a successor can start at once (a failure only delays it by the TTL)."""
    try:
        lease.release()
    except REDIS_ERRORS as e:
        log.info("status writer lease not released: %s", e)


def run_status_writer(
    settings: Settings,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    burst: bool = False,
    shard_recheck: float = SHARD_RECHECK,
) -> str:
    """Write statuses for every shard of the settings' queue while holding the lease.

    Returns ``"not_writer"`` (another writer holds the lease), ``"unavailable"``
    (Redis did not answer), ``"stopped"``, ``"lost"`` or, with ``burst``, ``"idle"``
    (every shard's stream written). The shard count is read again every ``shard_recheck`` seconds.
    """
    keys = Keys(settings.namespace, settings.queue)
    client = sync_client(settings.redis_url, retries=0)
    lease = Lease(client, keys.writer_lease, settings.lease_ttl)
    try:
        SyncDriver(client).run(record_count(keys, settings.shards))
        if not lease.acquire().held:
            client.close()
            return "not_writer"
    except REDIS_ERRORS as e:
        log.warning("status writer: Redis unavailable (%s)", e)
        client.close()
        return "unavailable"
    tenure = Tenure(lease)
    outcome = "failed"
    if not _wait_for_schema(settings.database_url, lambda: should_stop() or not tenure.keep()):
        _release(lease)
        client.close()
        return "stopped"
    engine = shared_engine(settings.database_url)
    writers = ShardWriters(
        settings, client, engine, holder=lease.holder, keep_lease=tenure.keep, held=tenure.held, recheck=shard_recheck
    )
    try:
        settle_heap()
        outcome = writers.run(should_stop, burst=burst)
        return outcome
    finally:
        gc.unfreeze()
        engine.dispose()
        if outcome != "lost" and writers.joined:  # a writer still running must not overlap a successor
            _release(lease)
        client.close()
        log.info("status writer %s ended: %s", lease.holder, outcome)


def _wait_for_schema(database_url: str, give_up: Callable[[], bool]) -> bool:
    """Whether the schema is current (SQLite is migrated on the spot); waits, saying why, until it is."""
    while True:
        try:
            if ensure_schema(database_url) == "migrated":
                log.info("migrated the SQLite status database %s", database_url)
            return True
        except SchemaOutdated as e:
            log.error("status writer waiting: %s", e)
        except SQLAlchemyError as e:
            log.error("status writer waiting: the database does not answer (%s)", reason(e))
        deadline = time.monotonic() + SCHEMA_RECHECK
        while time.monotonic() < deadline:
            if give_up():
                return False
            time.sleep(0.1)
