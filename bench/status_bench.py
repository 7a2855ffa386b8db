"""Status writer benchmark: ``python -m bench.status_bench`` (part of ``make bench``).

Against the machine's Redis and PostgreSQL (a database of its own, dropped after):

1. 10,000 status updates (2,500 callback lifecycles) written to the status
   stream at 1,000 updates/s while a real :class:`StatusWriter` (100 ms / 500)
   applies them: SQL round trips per update, against one statement per update.
2. Flush latency for 1,000 rows (500 callbacks and their attempt rows, half new)
   on tables that already hold 200,000 rows each, p50 and p99, against one
   UPDATE (or INSERT) per row in one transaction.
3. The two single-statement strategies on the same batches: ``UPDATE ... FROM``
   + insert-missing (what the writer uses) and ``INSERT ... ON CONFLICT DO UPDATE``.
4. Flush p99 and GC pauses with the heap frozen as at the writer's start (``gc.freeze()``) and without.

Environment: ``REDIS_URL``; ``BENCH_DATABASE_URL`` (an admin URL of a database to
connect to while creating the benchmark's own; default ``postgres@127.0.0.1/test``).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from bench.status_baseline import one_statement_each
from worker.storage import sql
from worker.storage.apply import StatusStore, by_table
from worker.storage.engine import make_engine
from worker.storage.merge import check, fold, merge
from worker.storage.migrate import upgrade
from worker.storage.rules import RULES
from worker.storage.service import settle_heap
from worker.storage.writer import StatusWriter
from worker.streams import status
from worker.streams.keys import Keys
from worker.streams.status import StatusUpdate

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
UPDATES, RATE, TICK = 10_000, 1_000.0, 0.01
LATENCY_ROUNDS = 60
HISTORY_ROWS = 200_000  # rows already in each table when flush latency is measured


@contextmanager
def scratch_database() -> Iterator[str]:
    """A migrated database of the benchmark's own."""
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"cbw_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


class RoundTrips:
    """Counts round trips to the database: statements, plus the ping of every pool checkout."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._one)
        event.listen(engine, "checkout", self._one)

    def _one(self, *_: Any) -> None:
        self.count += 1


def lifecycles(count: int, start_ms: int, tag: str) -> list[tuple[float, StatusUpdate]]:
    """(due offset s, update): callbacks queued evenly over the run, sending 200 ms later, the outcome 50 ms after."""
    out = []
    for i in range(count):
        cid, t = f"msg_{tag}{i:06d}", i * UPDATES / RATE / count
        at = start_ms + int(t * 1000)
        out.append((t, status.callback_queued(cid, f"https://example.com/{cid}", f"task-{i}", at)))
        out.append((t + 0.2, status.callback_sending(cid, 1, at + 200)))
        attempted = status.callback_attempted(
            cid, attempt=1, state="delivered", status_code=204, error=None, started_at=at + 200,
            duration_ms=12.0, outcome="delivered", next_attempt_at=None, at=at + 250,
        )  # fmt: skip
        out += [(t + 0.25, update) for update in attempted]
    return sorted(out, key=lambda item: item[0])


def stream_run(url: str) -> tuple[float, float, int]:
    """Part 1: (our round trips per update, the baseline's, updates applied)."""
    keys = Keys(f"bench{uuid.uuid4().hex[:8]}")
    client = redis.Redis.from_url(REDIS_URL)
    engine = make_engine(url)
    trips = RoundTrips(engine)
    writer = StatusWriter(client, StatusStore(engine), keys, consumer="bench", flush_interval=0.1, flush_size=500)
    plan = lifecycles(UPDATES // 4, int(time.time() * 1000), "s")
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop.is_set,), daemon=True)
    try:
        thread.start()
        started, index = time.monotonic(), 0
        while index < len(plan):  # one entry per 10 ms tick with whatever is due: 1,000 updates/s
            due = time.monotonic() - started
            batch = []
            while index < len(plan) and plan[index][0] <= due:
                batch.append(plan[index][1])
                index += 1
            status.record_status(batch, client, keys)
            time.sleep(max(0.0, TICK - (time.monotonic() - started - due)))
        while client.xlen(keys.status_updates) or writer.buffered:
            time.sleep(0.05)
        stop.set()
        thread.join(30)
        _verify(engine, [update for _, update in plan])
        ours = trips.count / len(plan)
        baseline_engine = make_engine(url)
        baseline_trips = RoundTrips(baseline_engine)
        one_statement_each(
            baseline_engine, [update for _, update in lifecycles(UPDATES // 4, 0, "b")], transaction=False
        )
        baseline_engine.dispose()
        return ours, baseline_trips.count / len(plan), len(plan)
    finally:
        stop.set()
        for key in client.scan_iter(match=f"{keys.namespace}:*"):
            client.delete(key)
        client.close()
        engine.dispose()


def _verify(engine: Engine, updates: list[StatusUpdate]) -> None:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for update in updates:
        check(update)
        rows[(update.table, update.key)] = fold(rows.get((update.table, update.key)), update)
    with engine.connect() as connection:
        found = connection.execute(text("SELECT id, status, attempts FROM callbacks WHERE id LIKE 'msg_s%'")).all()
    want = {key: (row["status"], row["attempts"]) for (table, key), row in rows.items() if table == "callbacks"}
    if {row.id: (row.status, row.attempts) for row in found} != want:
        raise AssertionError("the database does not hold what the updates say")


class GCPauses:
    """A ``gc.callbacks`` hook: milliseconds of every collection, appended to ``into``."""

    def __init__(self, into: list[float]) -> None:
        self.into, self._started = into, 0.0

    def __call__(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.into.append((time.perf_counter() - self._started) * 1000)


def latency_batches(round_: int) -> list[StatusUpdate]:
    """1,000 rows: 250 existing callbacks moving on, 250 new ones; each with its attempt row."""
    out: list[StatusUpdate] = []
    for i in range(500):
        cid = f"msg_l{i:06d}" if i % 2 == 0 else f"msg_l{round_:03d}_{i:06d}"
        at = 1_700_000_000_000 + round_ * 1000
        out.append(status.callback_sending(cid, round_ + 1, at))
        out += status.callback_attempted(
            cid, attempt=round_ + 1, state="retrying", status_code=503, error="HTTP 503: busy", started_at=at,
            duration_ms=7.5, outcome="retrying", next_attempt_at=at + 30_000, at=at + 10,
        )  # fmt: skip
    return out


def latency_run(url: str, *, frozen: bool = True) -> dict[str, list[float]]:
    """Parts 2 and 3: milliseconds per 1,000-row flush for the writer, the baseline and upsert.

    The writer's flush is the real one: merge, one statement, commit, then XACK + XDEL,
    after the heap is frozen as at the writer's start (``frozen``; else only collected).
    """
    engine = make_engine(url)
    store = StatusStore(engine)
    keys = Keys(f"bench{uuid.uuid4().hex[:8]}")
    client = redis.Redis.from_url(REDIS_URL)
    writer = StatusWriter(client, store, keys, consumer="bench", flush_interval=3600, flush_size=1_000_000)
    writer.ensure_group()
    autocommit = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    upsert = text(sql.postgres_upsert_statement([RULES["callbacks"], RULES["callback_attempts"]]))
    times: dict[str, list[float]] = {"ours": [], "baseline": [], "upsert": [], "gc": []}
    # A table of a deployment that has been running a while, so the planner sees real sizes.
    autocommit.exec_driver_sql(
        "INSERT INTO callbacks (id, status, attempts, url, created_at, updated_at) SELECT 'msg_old' || g,"
        " 'delivered', 1, 'https://example.com/hook', now(), now() FROM generate_series(1, %(n)s) g",
        {"n": HISTORY_ROWS},
    )
    autocommit.exec_driver_sql(
        "INSERT INTO callback_attempts (id, callback_id, attempt, outcome, created_at, updated_at) SELECT"
        " 'msg_old' || g || ':1', 'msg_old' || g, 1, 'delivered', now(), now() FROM generate_series(1, %(n)s) g",
        {"n": HISTORY_ROWS},
    )
    autocommit.exec_driver_sql("ANALYZE callbacks, callback_attempts")
    store.apply(merge(latency_batches(0)))  # the existing half exists from here on
    if frozen:
        settle_heap()
    else:
        gc.collect()  # part 1's garbage is not the flush's business
    gc.callbacks.append(pauses := GCPauses(times["gc"]))
    for round_ in range(1, LATENCY_ROUNDS + 1):
        updates = latency_batches(round_)
        for start in range(0, len(updates), 100):  # as the leader's settle calls write them
            status.record_status(updates[start : start + 100], client, keys)
        while writer.read(0.01):
            pass
        started = time.perf_counter()
        result = writer.flush()
        times["ours"].append((time.perf_counter() - started) * 1000)
        if result.rows != 1000:
            raise AssertionError(f"a flush wrote {result.rows} rows, not 1,000")

        started = time.perf_counter()
        groups = by_table(merge(latency_batches(round_ + 1000)))
        params = {name: sql.payload(RULES[name], changes) for name, changes in groups.items()}
        for name, changes in groups.items():
            bits = RULES[name].bits
            params[f"masks_{name}"] = json.dumps({c.key: sum(bits[col] for col in c.values) for c in changes})
        autocommit.execute(upsert, params)
        times["upsert"].append((time.perf_counter() - started) * 1000)

        if round_ % 4 == 0:  # slow: fewer rounds
            changes = merge(latency_batches(round_ + 2000))
            rows = [StatusUpdate(c.table, c.key, c.values["updated_at"], c.values) for c in changes]
            started = time.perf_counter()
            one_statement_each(engine, rows, transaction=True)
            times["baseline"].append((time.perf_counter() - started) * 1000)
    gc.callbacks.remove(pauses)
    gc.unfreeze()
    autocommit.close()
    store.close()
    engine.dispose()
    for key in client.scan_iter(match=f"{keys.namespace}:*"):
        client.delete(key)
    client.close()
    return times


def run() -> list[dict[str, Any]]:
    """Run all three parts; one row per metric: metric, ours, baseline, ratio, target."""
    with scratch_database() as url:
        ours, baseline, _ = stream_run(url)
        times = latency_run(url)
    with scratch_database() as url:
        unfrozen = latency_run(url, frozen=False)
    p50 = {name: statistics.median(samples) for name, samples in times.items() if name != "gc"}
    p99 = {name: _p99(samples) for name, samples in times.items() if name != "gc"}
    return [
        _row("status: SQL round trips per update (10k updates at 1k/s)", ours, baseline, ">= 20x fewer"),
        _row("status: flush of 1,000 rows, p50 ms (PostgreSQL)", p50["ours"], p50["baseline"], "<= 50 ms"),
        _row("status: flush of 1,000 rows, p99 ms (PostgreSQL)", p99["ours"], p99["baseline"], "<= 80 ms"),
        _row("status: flush p99 ms, gc.freeze() at writer start vs not", p99["ours"], _p99(unfrozen["ours"]), "lower"),
        _row("status: longest GC pause ms, gc.freeze() vs not", max(times["gc"]), max(unfrozen["gc"]), "lower"),
        _row("status: UPDATE FROM + insert vs ON CONFLICT upsert, p50 ms", p50["ours"], p50["upsert"], "keep faster"),
    ]


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def _row(metric: str, ours: float, baseline: float, target: str) -> dict[str, Any]:
    ratio = baseline / ours if ours else float("inf")
    return {
        "metric": metric,
        "ours": round(ours, 4),
        "baseline": round(baseline, 4),
        "ratio": round(ratio, 2),
        "target": target,
    }


def main() -> None:
    """Print the rows as a table."""
    rows = run()
    print(f"{'metric':64} {'ours':>10} {'baseline':>10} {'ratio':>8}  target")
    for row in rows:
        print(f"{row['metric']:64} {row['ours']:>10} {row['baseline']:>10} {row['ratio']:>7}x  {row['target']}")


if __name__ == "__main__":
    main()
