"""Every shard's status stream written under the one writer lease: a :class:`StatusWriter` thread per shard.

Why one writer per shard, all at once: a callback lives in one shard, and its
status updates only ever go to that shard's status stream (image tasks' to
shard 0's), so no two shards' writers touch the same row, and each keeps "last
write wins" by committing its own stream in order. One lease for the whole
namespace still decides who writes (:mod:`.service`).

The calling thread supervises (:class:`ShardWriters`): it alone renews the
lease and asks ``should_stop``; the writers only read whether the tenure still
holds (never calling Redis for it), so a slow renewal stalls none of them and
a lapsed one stops them all. It re-reads the namespace's shard count every
``SHARD_RECHECK`` seconds (the largest ever recorded,
:func:`~worker.streams.shards.counts_in_use`), so shards added on a live
namespace get a writer without a restart. Stopped or lost, it stops every
writer and joins them, for at most ``JOIN_TIMEOUT`` seconds in all.

Database: one engine for every writer, a :class:`StatusStore` each (stores are
not thread-safe). Each store keeps a connection between flushes, so the pool is
uncapped (one connection per shard). SQLite takes one writing transaction at a
time (two at once fail with "database is locked"): there the writers' flushes
take one lock (:class:`SerializedStore`); PostgreSQL runs them concurrently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import redis
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from ..config.settings import Settings
from ..streams.client import REDIS_ERRORS
from ..streams.keys import Keys
from ..streams.protocol import SyncDriver
from ..streams.shards import counts_in_use
from .apply import StatusStore
from .engine import is_postgres, make_engine
from .merge import RowChange
from .writer import StatusWriter

log = logging.getLogger(__name__)

SHARD_RECHECK = 5.0  # seconds between reads of the namespace's shard count
JOIN_TIMEOUT = 30.0  # seconds, for all writers together, to stop once told (a flush may be under way)
TICK = 0.05  # seconds between the supervisor's looks at the lease, the stop request and the writers


def shared_engine(database_url: str) -> Engine:
    """The engine of every shard's writer: its pool uncapped, as each writer's store keeps a connection."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return make_engine(database_url)  # a pool per thread already, and no cap to lift
    return make_engine(database_url, max_overflow=-1)


class SerializedStore(StatusStore):
    """A store whose flushes take a lock shared with the other shards' stores (SQLite: one writer at a time)."""

    def __init__(self, engine: Engine, lock: threading.Lock) -> None:
        super().__init__(engine)
        self._lock = lock

    def apply(self, changes: Sequence[RowChange]) -> None:
        """:meth:`StatusStore.apply`, while no other shard's store applies."""
        with self._lock:
            super().apply(changes)


class WriterThread:
    """One shard's writer running in a thread of its own; its outcome, or the error that ended it."""

    def __init__(self, writer: StatusWriter, stop: threading.Event, held: Callable[[], bool], *, burst: bool) -> None:
        self.writer = writer
        self.outcome: str | None = None
        self.error: BaseException | None = None
        self._stop, self._held, self._burst = stop, held, burst
        self.thread = threading.Thread(target=self._run, name=f"status-writer-{writer.keys.shard}", daemon=True)

    def _run(self) -> None:
        try:
            self.outcome = self.writer.run(self._stop.is_set, keep_lease=self._held, burst=self._burst)
        except BaseException as e:  # handed to the supervisor, which stops the others and raises it
            self.error = e
        finally:
            self.writer.store.close()

    @property
    def done(self) -> bool:
        """Whether the writer has returned (or failed)."""
        return not self.thread.is_alive()


class ShardWriters:
    """The status writers of every shard of one queue, under one tenure of the writer lease (see the module)."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        engine: Engine,
        *,
        holder: str,
        keep_lease: Callable[[], bool],
        held: Callable[[], bool],
        recheck: float = SHARD_RECHECK,
    ) -> None:
        self.settings = settings
        self.client = client
        self.engine = engine
        self.keys = Keys(settings.namespace, settings.queue)
        self.holder = holder
        self.recheck = recheck
        self.joined = True  # every writer thread has ended (after :meth:`run`)
        self._keep_lease, self._held = keep_lease, held
        self._flush_lock = None if is_postgres(engine) else threading.Lock()
        self._stop = threading.Event()
        self._writers: list[WriterThread] = []  # index = shard
        self._next_count = 0.0

    def run(self, should_stop: Callable[[], bool], *, burst: bool = False) -> str:
        """Write until stopped (``"stopped"``), the lease is lost (``"lost"``) or, in burst mode, idle (``"idle"``).

        Burst mode is idle once every shard's writer is. An error that ended a
        writer is raised here, once every writer has stopped.
        """
        try:
            outcome = self._supervise(should_stop, burst)
        finally:
            self._stop.set()
            self.joined = self._join()
        self._raise_failure()
        return outcome

    def _supervise(self, should_stop: Callable[[], bool], burst: bool) -> str:
        self._grow(burst)
        while True:
            if not self._keep_lease():
                return "lost"
            if should_stop():
                return "stopped"
            self._raise_failure()
            if any(writer.outcome == "lost" for writer in self._writers):
                return "lost"
            if time.monotonic() >= self._next_count:
                self._grow(burst)
            if burst and all(writer.done for writer in self._writers) and not self._grow(burst):
                return "idle"  # every shard's writer found its stream empty, and no shard was added
            time.sleep(TICK)

    def _grow(self, burst: bool) -> int:
        """Start a writer for each shard the namespace gained since the last look; returns how many started."""
        self._next_count = time.monotonic() + self.recheck
        try:
            count = SyncDriver(self.client).run(counts_in_use(self.keys, self.settings.shards))
        except REDIS_ERRORS as e:
            log.warning("status writer: shard count not read (%s); looking again in %.0fs", e, self.recheck)
            count = self.settings.shards
        started = range(len(self._writers), count)
        for shard in started:
            self._start(self.keys.of_shard(shard), burst)
        return len(started)

    def _start(self, keys: Keys, burst: bool) -> None:
        settings = self.settings
        store = StatusStore(self.engine) if self._flush_lock is None else SerializedStore(self.engine, self._flush_lock)
        writer = StatusWriter(
            self.client,
            store,
            keys,
            consumer=f"{self.holder}:{keys.shard}",
            flush_interval=settings.status_flush_interval,
            flush_size=settings.status_flush_size,
            claim_idle=max(5.0, 2 * settings.lease_ttl),
            idle_block=min(1.0, settings.lease_ttl / 4),
        )
        running = WriterThread(writer, self._stop, self._held, burst=burst)
        self._writers.append(running)
        log.info("writing statuses of %s as %s", keys.status_updates, writer.consumer)
        running.thread.start()

    def _raise_failure(self) -> None:
        for writer in self._writers:
            if writer.error is not None:
                raise writer.error

    def _join(self) -> bool:
        """Wait for every writer to end, ``JOIN_TIMEOUT`` in all; whether all did."""
        deadline = time.monotonic() + JOIN_TIMEOUT
        for writer in self._writers:
            writer.thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [writer.writer.keys.label for writer in self._writers if not writer.done]
        if stuck:
            log.warning("status writers of %s did not stop within %.0fs", ", ".join(stuck), JOIN_TIMEOUT)
        return not stuck
