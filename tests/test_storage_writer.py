"""The status writer against real Redis and real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from storage_helpers import assert_rows_are, prefixed, rows, updates
from test_storage_merge import one_by_one

from worker.storage import merge
from worker.storage.apply import StatusStore
from worker.storage.engine import make_engine
from worker.storage.writer import StatusWriter
from worker.streams import status
from worker.streams.keys import STATUS_GROUP
from worker.streams.status import StatusUpdate

pytest_plugins = ("storage_fixtures",)  # fixtures: real databases, servers of our own

T0 = 1_700_000_000_000
_prefixes = itertools.count()


def lifecycle(n: int, *, failures: int = 1, final: str = "delivered") -> list[list[StatusUpdate]]:
    """Status stream entries as the producer and the leader write them, for callbacks 0..n-1."""
    ids = [f"msg_{i:04d}" for i in range(n)]
    entries = [[status.callback_queued(cid, f"https://example.com/{cid}", f"task-{cid}", T0) for cid in ids]]
    t = T0
    for attempt in range(1, failures + 2):
        t += 1000
        entries.append([status.callback_sending(cid, attempt, t) for cid in ids])
        last = attempt == failures + 1
        outcome: list[StatusUpdate] = []
        for cid in ids:
            outcome += status.callback_attempted(
                cid,
                attempt=attempt,
                state=final if last else "retrying",
                status_code=204 if last and final == "delivered" else 503,
                error=None if last and final == "delivered" else "HTTP 503: busy",
                started_at=t,
                duration_ms=4.25,
                outcome=final if last else "retrying",
                next_attempt_at=None if last else t + 5000,
                at=t + 5,
            )
        entries.append(outcome)
    return entries


def expected(entries: list[list[StatusUpdate]]) -> dict[str, dict[str, dict]]:
    reference = one_by_one({}, [u for entry in entries for u in entry])
    out: dict[str, dict[str, dict]] = {}
    for (table, key), row in reference.items():
        out.setdefault(table, {})[key] = row
    return out


def database_rows(url: str) -> dict[str, dict[str, dict]]:
    engine = make_engine(url)
    try:
        return {table: found for table in merge.RULES if (found := rows(engine, table))}
    finally:
        engine.dispose()


def make_writer(client, url, keys, consumer="w1", cls=StatusWriter, **options) -> StatusWriter:
    options.setdefault("flush_interval", 60.0)
    options.setdefault("idle_block", 0.05)
    return cls(client, StatusStore(make_engine(url)), keys, consumer=consumer, **options)


def record(client, keys, entries: list[list[StatusUpdate]]) -> None:
    for entry in entries:
        status.record_status(entry, client, keys)


def pending(client, keys) -> int:
    return int(client.xpending(keys.status_updates, STATUS_GROUP)["pending"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(updates(), max_size=30), cuts=st.lists(st.integers(0, 30), max_size=3))
def test_the_sql_applies_exactly_the_merge_rules(db_url, sequence, cuts):
    prefix = f"p{next(_prefixes)}-"
    sequence = [prefixed(u, prefix) for u in sequence]
    bounds = [0, *sorted(c for c in cuts if c <= len(sequence)), len(sequence)]
    engine = make_engine(db_url)
    store = StatusStore(engine)
    try:
        for a, b in itertools.pairwise(bounds):
            store.apply(merge.merge(sequence[a:b]))
        want = one_by_one({}, sequence)
        assert_rows_are(engine, prefix, want)
    finally:
        store.close()
        engine.dispose()


def test_writer_coalesces_applies_then_acks_and_deletes(db_url, client, keys):
    entries = lifecycle(300, failures=1)
    record(client, keys, entries)
    writer = make_writer(client, db_url, keys, flush_size=500)
    writer.ensure_group()
    assert writer.read(0.1) > 0
    assert writer.due  # 500 updates buffered: the size triggers a flush, not the 60 s interval
    result = writer.flush()
    assert result.entries > 0 and result.rows < result.updates  # coalesced
    while writer.read(0.05):
        writer.flush()
    assert writer.flush().entries == 0  # on demand, with nothing left
    assert database_rows(db_url) == expected(entries)
    assert client.xlen(keys.status_updates) == 0
    assert pending(client, keys) == 0


class CrashAfterCommit(StatusWriter):
    """A writer that dies between the database commit and the XACK."""

    def ack_unacked(self) -> None:
        if self._unacked:
            raise SystemExit("crashed after commit, before ack")


def test_a_crash_between_commit_and_ack_is_reapplied_without_changing_a_row(db_url, client, keys):
    first = lifecycle(50, failures=1)
    record(client, keys, first)
    crashing = make_writer(client, db_url, keys, consumer="crashes", cls=CrashAfterCommit, flush_size=10_000)
    crashing.ensure_group()
    crashing.read(0.1)
    with pytest.raises(SystemExit):
        crashing.flush()
    committed = database_rows(db_url)
    assert committed == expected(first)
    assert pending(client, keys) > 0  # committed but never acked

    successor = make_writer(client, db_url, keys, consumer="successor")
    assert successor.run(burst=True) == "idle"  # claims the crashed writer's entries first
    assert database_rows(db_url) == committed  # re-applied: no row changed
    assert pending(client, keys) == 0 and client.xlen(keys.status_updates) == 0

    # The replay also composes with newer updates read in the same flush.
    crashing = make_writer(client, db_url, keys, consumer="crashes-again", cls=CrashAfterCommit, flush_size=10_000)
    late = [[status.callback_sending("msg_0001", 3, T0 + 9000), status.callback_sending("msg_9999", 1, T0 + 9000)]]
    record(client, keys, late)
    crashing.read(0.1)
    with pytest.raises(SystemExit):
        crashing.flush()
    record(client, keys, [[status.callback_sending("msg_0002", 3, T0 + 9500)]])
    assert make_writer(client, db_url, keys, consumer="third").run(burst=True) == "idle"
    final = database_rows(db_url)
    assert final == expected([*first, *late, [status.callback_sending("msg_0002", 3, T0 + 9500)]])
    assert final["callbacks"]["msg_0001"]["status"] == "delivered"  # terminal: the late "sending" did not undo it
    assert final["callbacks"]["msg_0001"]["attempts"] == 3


def test_malformed_updates_go_to_the_bad_stream_and_the_rest_is_applied(db_url, client, keys):
    good = lifecycle(5, failures=0)
    record(client, keys, good[:1])
    bad_update = {"table": "callbacks", "key": "msg_0000", "at": T0, "fields": {"status": "exploded"}}
    mixed = [*json.loads(status.encode(good[1])), bad_update]
    client.xadd(keys.status_updates, {"u": json.dumps(mixed)})
    client.xadd(keys.status_updates, {"u": "{not json"})
    client.xadd(keys.status_updates, {"other": "field"})
    record(client, keys, good[2:])
    assert make_writer(client, db_url, keys).run(burst=True) == "idle"
    assert database_rows(db_url) == expected(good)
    bad = client.xrange(keys.status_bad)
    assert len(bad) == 3
    reasons = [fields[b"error"].decode() for _, fields in bad]
    assert "not one of" in reasons[0] and json.loads(fields_u(bad[0])) == [bad_update]
    assert fields_u(bad[1]) == "{not json"
    assert reasons[2] == "entry has no 'u' field"
    assert client.xlen(keys.status_updates) == 0 and pending(client, keys) == 0


def fields_u(item) -> str:
    return item[1][b"u"].decode()


def test_an_update_the_database_refuses_is_set_aside_alone(pg_url, client, keys):
    engine = make_engine(pg_url)
    with engine.begin() as connection:  # a rule of this test's own database that validation cannot know
        connection.execute(text("ALTER TABLE callbacks ADD CONSTRAINT no_evil CHECK (last_error <> 'evil')"))
    try:
        entries = lifecycle(20, failures=0)
        refused = StatusUpdate("callbacks", "msg_evil", T0 + 50_000, {"last_error": "evil"})
        entries.append([status.callback_sending("msg_0004", 9, T0 + 50_000), refused])
        record(client, keys, entries)
        assert make_writer(client, pg_url, keys).run(burst=True) == "idle"
        assert database_rows(pg_url) == expected([*entries[:-1], entries[-1][:1]])
        (bad,) = client.xrange(keys.status_bad)
        assert json.loads(fields_u(bad)) == [refused.as_json()]
        assert "no_evil" in bad[1][b"error"].decode()
    finally:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE callbacks DROP CONSTRAINT no_evil"))
        engine.dispose()


def test_the_migration_creates_exactly_what_the_models_declare(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from worker.storage.migrate import alembic_config, current
    from worker.storage.models import Base

    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    assert current(db_url) == head


def test_a_flush_is_one_transaction(db_url):
    engine = make_engine(db_url)
    refuse = {  # a rule of this test's own database: attempt rows with error 'boom' are refused
        "sqlite": [
            "CREATE TRIGGER refuse_boom BEFORE INSERT ON callback_attempts WHEN NEW.error = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
        ],
        "postgresql": ["ALTER TABLE callback_attempts ADD CONSTRAINT refuse_boom CHECK (error <> 'boom')"],
    }[engine.dialect.name]
    with engine.begin() as connection:
        for statement in refuse:
            connection.execute(text(statement))
    store = StatusStore(engine)
    try:
        batch = lifecycle(3, failures=0)[0] + [StatusUpdate("callback_attempts", "msg_0000:1", T0, {"error": "boom"})]
        with pytest.raises(IntegrityError):
            store.apply(merge.merge(batch))
        assert database_rows(db_url) == {}  # the callbacks rows of the same flush were rolled back too
        store.apply(merge.merge(batch[:-1]))  # and the store goes on with the same connection
        assert set(database_rows(db_url)["callbacks"]) == {"msg_0000", "msg_0001", "msg_0002"}
    finally:
        store.close()
        with engine.begin() as connection:
            if engine.dialect.name == "sqlite":
                connection.execute(text("DROP TRIGGER refuse_boom"))
            else:
                connection.execute(text("ALTER TABLE callback_attempts DROP CONSTRAINT refuse_boom"))
        engine.dispose()


def test_callbacks_enqueued_by_the_producer_appear_as_queued_rows(db_url, client, keys, make_settings):
    from worker.producer import CallbackProducer

    settings = make_settings(WORKER_NAMESPACE=keys.namespace)
    ids = CallbackProducer(settings).enqueue_many(
        [("https://example.com/hook", {"n": n}, f"task-{n}" if n % 2 else None) for n in range(50)]
    )
    writer = make_writer(client, db_url, keys, flush_size=500)
    writer.ensure_group()
    while writer.read(0.05):
        writer.flush()
    writer.flush()

    engine = make_engine(db_url)
    try:
        stored = rows(engine, "callbacks")
    finally:
        engine.dispose()
    assert sorted(stored) == sorted(ids)
    assert all(row["status"] == "queued" and row["url"] == "https://example.com/hook" for row in stored.values())
    assert stored[ids[1]]["task_id"] == "task-1" and stored[ids[0]]["task_id"] is None


def test_a_backlog_of_big_entries_is_read_a_flush_at_a_time(db_url, client, keys):
    """Memory stays bounded: entries of 300 queued callbacks each are decoded a flush's worth at a time."""
    batches = [[(f"msg_{b:02d}{i:03d}", "https://example.com/h", None) for i in range(300)] for b in range(12)]
    for batch in batches:
        client.xadd(keys.status_updates, {"u": status.encode_queued(batch, T0)})
    client.xadd(keys.status_updates, {"u": status.encode([status.callback_sending("msg_00000", 1, T0 + 1)])})
    writer = make_writer(client, db_url, keys, flush_size=500)
    writer.ensure_group()
    flushed = []
    while writer.read(0.05):
        assert writer.buffered <= 500 + 300  # never the whole backlog
        flushed.append(writer.flush().updates)
    assert sum(flushed) == 12 * 300 + 1 and len(flushed) >= 7
    found = database_rows(db_url)["callbacks"]
    assert len(found) == 3600 and found["msg_00000"]["status"] == "sending"
    assert pending(client, keys) == 0
