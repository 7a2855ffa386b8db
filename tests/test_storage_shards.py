"""The status writer of a sharded namespace: one lease, a writer per shard's status stream.

Real Redis and real databases; waits are for conditions, never for time.
"""

from __future__ import annotations

import threading

from conftest import wait_until
from redis.exceptions import ResponseError
from storage_helpers import prefixed
from test_storage_writer import database_rows, expected, lifecycle, pending, record

from worker.storage.service import run_status_writer
from worker.streams.keys import STATUS_GROUP
from worker.streams.protocol import SyncDriver
from worker.streams.shards import record_count
from worker.streams.status import StatusUpdate

pytest_plugins = ("storage_fixtures",)  # fixtures: real databases


def shard_lifecycle(shard: int, n: int, **options) -> list[list[StatusUpdate]]:
    """:func:`lifecycle` of callbacks of their own (``s<shard>-`` before every id), as shard ``shard`` gets them."""
    return [[prefixed(update, f"s{shard}-") for update in entry] for entry in lifecycle(n, **options)]


def has_group(client, keys) -> bool:
    try:
        return any(g["name"] in (STATUS_GROUP, STATUS_GROUP.encode()) for g in client.xinfo_groups(keys.status_updates))
    except ResponseError:  # no stream yet
        return False


def drained(client, keys) -> bool:
    return client.xlen(keys.status_updates) == 0 and pending(client, keys) == 0


def shard_writer_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("status-writer-")]


class Background:
    """``run_status_writer`` in a thread until :meth:`finish` (or until it returns by itself)."""

    def __init__(self, settings, **options) -> None:
        self.stop = threading.Event()
        self.outcome: list[str] = []
        self.thread = threading.Thread(
            target=lambda: self.outcome.append(run_status_writer(settings, should_stop=self.stop.is_set, **options)),
            daemon=True,
        )
        self.thread.start()

    def finish(self) -> list[str]:
        self.stop.set()
        self.thread.join(60)
        return self.outcome


def test_every_shards_updates_reach_the_database(db_url, make_settings, client, keys):
    settings = make_settings(
        DATABASE_URL=db_url,
        CALLBACK_SHARDS="3",
        CALLBACK_STATUS_FLUSH_INTERVAL="0.02",
        CALLBACK_STATUS_FLUSH_SIZE="50",  # many small flushes per shard, so the shards' flushes overlap
    )
    entries = {shard: shard_lifecycle(shard, 120, failures=1) for shard in range(3)}
    for shard, shard_entries in entries.items():
        record(client, keys.of_shard(shard), shard_entries)

    assert run_status_writer(settings, burst=True) == "idle"

    assert database_rows(db_url) == expected([entry for shard in range(3) for entry in entries[shard]])
    for shard_keys in keys.shards(3):
        assert drained(client, shard_keys)
        consumers = client.xinfo_consumers(shard_keys.status_updates, STATUS_GROUP)
        assert [c["name"].decode().rsplit(":", 1)[1] for c in consumers] == [str(shard_keys.shard)]
    assert client.smembers(keys.shard_counts) == {b"3"}  # recorded at start
    assert not client.exists(keys.status_lease)  # one lease for all shards, released on the way out
    assert not shard_writer_threads()


def test_a_shard_count_raised_after_start_gets_a_writer(sqlite_url, make_settings, client, keys):
    settings = make_settings(DATABASE_URL=sqlite_url, CALLBACK_STATUS_FLUSH_INTERVAL="0.02")  # one shard
    running = Background(settings, shard_recheck=0.1)
    try:
        assert wait_until(lambda: has_group(client, keys), 30)  # shard 0's writer runs
        first = shard_lifecycle(0, 5, failures=0)
        record(client, keys, first)
        assert wait_until(lambda: database_rows(sqlite_url) == expected(first), 30)

        SyncDriver(client).run(record_count(keys, 3))  # a producer now uses three shards
        later = shard_lifecycle(2, 20, failures=1)
        record(client, keys.of_shard(2), later)
        assert wait_until(lambda: drained(client, keys.of_shard(2)), 30)
        assert wait_until(lambda: has_group(client, keys.of_shard(1)), 30)  # shard 1 is written too
    finally:
        assert running.finish() == ["stopped"]
    assert database_rows(sqlite_url) == expected(first + later)
    assert not client.exists(keys.status_lease)
    assert not shard_writer_threads()


def test_losing_the_lease_stops_every_shard_writer(sqlite_url, make_settings, client, keys):
    settings = make_settings(DATABASE_URL=sqlite_url, CALLBACK_SHARDS="3", CALLBACK_STATUS_FLUSH_INTERVAL="30")
    running = Background(settings)
    try:
        assert wait_until(lambda: all(has_group(client, shard_keys) for shard_keys in keys.shards(3)), 30)
        for shard_keys in keys.shards(3):
            record(client, shard_keys, shard_lifecycle(shard_keys.shard, 5, failures=0))
        # read and buffered by every shard's writer, for the 30 s interval
        assert wait_until(lambda: all(pending(client, shard_keys) > 0 for shard_keys in keys.shards(3)), 30)

        client.set(keys.status_lease, "someone-else")  # another writer took over
        running.thread.join(30)
    finally:
        outcome = running.finish()
    assert outcome == ["lost"]
    assert not shard_writer_threads()  # every shard's writer stopped and was joined
    assert database_rows(sqlite_url) == {}  # none of them wrote: the new holder claims their entries
    assert all(pending(client, shard_keys) > 0 for shard_keys in keys.shards(3))
    assert client.get(keys.status_lease) == b"someone-else"  # not released: it was no longer ours
