"""The status writer when things break: the database goes away, connections die, PgBouncer sits in
between, writers come and go. Real servers throughout; waits are for conditions, never for time."""

from __future__ import annotations

import threading

import dramatiq
import pytest
from conftest import wait_until
from dramatiq.brokers.redis import RedisBroker
from redis.exceptions import ResponseError
from sqlalchemy import text
from test_storage_writer import database_rows, expected, lifecycle, make_writer, pending, record

from worker.actors.status_writer import declare
from worker.actors.watch import LeaseWatch
from worker.storage.engine import make_engine
from worker.storage.migrate import upgrade
from worker.storage.service import run_status_writer
from worker.storage.writer import StatusWriter
from worker.streams.client import sync_client
from worker.streams.keys import STATUS_GROUP
from worker.streams.lease import Lease

pytest_plugins = ("storage_fixtures",)  # fixtures: real databases, servers of our own

pytestmark = pytest.mark.slow


class Running:
    """A writer looping in a thread until :meth:`finish`."""

    def __init__(self, writer: StatusWriter) -> None:
        self.writer = writer
        self.stop = threading.Event()
        self.outcome: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.outcome = self.writer.run(self.stop.is_set)

    def finish(self) -> str | None:
        self.stop.set()
        self.thread.join(60)
        self.writer.store.close()
        self.writer.store.engine.dispose()
        return self.outcome


def drained(redis_client, keys) -> bool:
    return redis_client.xlen(keys.status_updates) == 0 and pending(redis_client, keys) == 0


def test_the_writer_waits_out_a_database_restart_and_loses_nothing(private_postgres, client, keys):
    entries = lifecycle(40, failures=1)
    running = Running(make_writer(client, private_postgres.url, keys, flush_interval=0.02))
    try:
        record(client, keys, entries[:2])
        assert wait_until(lambda: drained(client, keys), 30)

        private_postgres.stop("immediate")  # the server dies; the writer's connection with it
        record(client, keys, entries[2:])
        assert wait_until(lambda: running.writer.failures >= 3, 60)
        assert client.xlen(keys.status_updates) > 0  # nothing acked that was not committed

        private_postgres.start()
        assert wait_until(lambda: drained(client, keys), 60)
    finally:
        assert running.finish() == "stopped"
    assert database_rows(private_postgres.url) == expected(entries)


def test_the_writer_reconnects_when_its_backends_are_terminated(pg_url, client, keys):
    entries = lifecycle(25, failures=2, final="dead")
    engine = make_engine(pg_url)
    running = Running(make_writer(client, pg_url, keys, flush_interval=0.02))
    try:
        for index, entry in enumerate(entries):
            record(client, keys, [entry])
            assert wait_until(lambda: drained(client, keys), 30)
            if index % 2 == 0:  # a real connection loss: kill every other backend of our own database
                with engine.connect() as connection:
                    connection.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    )
    finally:
        assert running.finish() == "stopped"
        engine.dispose()
    assert running.writer.retries >= 1
    assert database_rows(pg_url) == expected(entries)


def test_migrations_and_the_writer_work_through_pgbouncer_in_transaction_mode(pgbouncer, client, keys):
    clear = make_engine(pgbouncer)
    with clear.begin() as connection:
        assert connection.execute(text("SELECT current_setting('application_name')")).scalar() is not None
        for table in ("callbacks", "callback_attempts", "image_edit_tasks"):
            connection.execute(text(f"DELETE FROM {table}"))
    clear.dispose()
    upgrade(pgbouncer)  # already at head: alembic reads its version through the pooler
    entries = lifecycle(120, failures=1)
    record(client, keys, entries)
    readers_done = threading.Event()

    def read_meanwhile() -> None:  # other clients share the two server connections
        engine = make_engine(pgbouncer)
        while not readers_done.is_set():
            with engine.connect() as connection:
                connection.execute(text("SELECT count(*) FROM callbacks")).scalar()
        engine.dispose()

    readers = [threading.Thread(target=read_meanwhile) for _ in range(3)]
    for reader in readers:
        reader.start()
    writer = make_writer(client, pgbouncer, keys, flush_size=100)
    try:
        assert writer.run(burst=True) == "idle"
    finally:
        readers_done.set()
        for reader in readers:
            reader.join(30)
        writer.store.close()
        writer.store.engine.dispose()
    assert database_rows(pgbouncer) == expected(entries)
    assert drained(client, keys)


def test_only_the_lease_holder_writes_and_a_stopped_writer_hands_over(make_settings, sqlite_url, client, keys):
    settings = make_settings(DATABASE_URL=sqlite_url, CALLBACK_STATUS_FLUSH_INTERVAL="0.02")
    entries = lifecycle(10, failures=0)
    record(client, keys, entries)
    holder = Lease(sync_client(settings.redis_url), keys.writer_lease, settings.lease_ttl)
    assert holder.acquire().held
    assert run_status_writer(settings, burst=True) == "not_writer"
    assert client.xlen(keys.status_updates) == len(entries)
    holder.release()
    assert run_status_writer(settings, burst=True) == "idle"
    assert not client.exists(keys.status_lease)  # released on the way out
    assert database_rows(sqlite_url) == expected(entries)


def test_a_writer_that_loses_its_lease_stops_without_writing(make_settings, sqlite_url, client, keys):
    settings = make_settings(DATABASE_URL=sqlite_url, CALLBACK_STATUS_FLUSH_INTERVAL="30")
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(run_status_writer(settings)), daemon=True)
    thread.start()
    assert wait_until(lambda: client.exists(keys.status_lease) and _has_group(client, keys), 10)
    record(client, keys, lifecycle(5, failures=0))
    assert wait_until(lambda: pending(client, keys) > 0, 10)  # read, buffered for the 30 s interval
    client.set(keys.status_lease, "someone-else")  # another writer took over
    thread.join(30)
    assert outcome == ["lost"]
    assert database_rows(sqlite_url) == {}  # it wrote nothing: the new holder claims its entries
    assert pending(client, keys) > 0


def test_the_actor_is_started_by_the_watch_and_stops_with_the_worker(make_settings, sqlite_url, client, keys):
    settings = make_settings(DATABASE_URL=sqlite_url, CALLBACK_STATUS_FLUSH_INTERVAL="0.02")
    broker = RedisBroker(url=settings.redis_url, namespace=keys.dramatiq_namespace)  # type: ignore[no-untyped-call]
    watch = LeaseWatch(settings)
    broker.add_middleware(watch)
    declare(broker, settings, watch)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        entries = lifecycle(30, failures=1)
        record(client, keys, entries)
        assert wait_until(lambda: drained(client, keys) and client.exists(keys.status_lease), 30)
        assert wait_until(lambda: database_rows(sqlite_url) == expected(entries), 30)
    finally:
        worker.stop()
        broker.close()
    assert not client.exists(keys.status_lease)  # released on shutdown


def test_a_fresh_sqlite_database_is_migrated_by_the_writer_itself(tmp_path, make_settings, keys, client):
    from worker.storage.migrate import current, ensure_schema, head
    from worker.storage.service import run_status_writer
    from worker.streams.status import callback_queued, record_status

    url = f"sqlite:///{tmp_path / 'fresh' / 'worker.db'}"
    record_status([callback_queued("msg_1", "https://example.com/", None, 1_700_000_000_000)], client, keys)

    outcome = run_status_writer(make_settings(DATABASE_URL=url, WORKER_NAMESPACE=keys.namespace), burst=True)

    assert outcome == "idle" and current(url) == head()
    assert ensure_schema(url) == "current"


def test_an_unmigrated_postgresql_database_is_left_alone_with_a_clear_error(pg_database):
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from storage_fixtures import _admin

    from worker.storage.migrate import SchemaOutdated, current, ensure_schema

    name = f"{make_url(pg_database).database}_empty"
    admin = _admin()
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_database).set(database=name).render_as_string(hide_password=False)
    try:
        with pytest.raises(SchemaOutdated, match=r"run `make migrate` \(python -m worker.storage migrate\)"):
            ensure_schema(url)
        assert current(url) is None  # nothing was created behind the operator's back
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _has_group(client, keys) -> bool:
    """Whether the writer has created its consumer group (after its schema check)."""
    try:
        return any(g["name"] in (STATUS_GROUP, STATUS_GROUP.encode()) for g in client.xinfo_groups(keys.status_updates))
    except ResponseError:
        return False
