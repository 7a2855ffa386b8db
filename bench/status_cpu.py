"""The status writer's CPU per update and its memory with a backlog: ``python -m bench.status_cpu [what]``.

- ``cpu``: the writer's Python work (decode, check, merge, statement parameters)
  on status stream entries as the producer and the leader write them: per
  callback one compact ``queued`` row (1,000 a batch, as ``enqueue_many`` of
  1,000), a ``sending`` update and an attempt's two updates (64 callbacks per
  settle entry). CPU time (``time.process_time``), not wall time, per update.
- ``profile``: the same under cProfile, the top functions.
- ``rss`` (SQLite), ``rss-pg`` (PostgreSQL): a fresh process runs a real
  :class:`StatusWriter` (burst mode) over a status stream holding 100,000
  queued callbacks' entries (100 of 1,000); its RSS at start, its peak
  (``VmHWM``) and its CPU per update. ``lifecycle``, ``lifecycle-pg``: the
  same over 20,000 callbacks' whole lifecycles. ``BENCH_PROFILE=1`` profiles
  that process.
- :func:`run`: the rows for ``make bench``'s report.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from worker.storage import sql
from worker.storage.apply import by_table
from worker.storage.entries import decode_entry
from worker.storage.merge import merge
from worker.storage.rules import RULES
from worker.streams import status

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUED_BATCH, SETTLE_BATCH, FLUSH = 1_000, 64, 500
T0 = 1_700_000_000_000
PROFILED = ("-m", "cProfile", "-s", "tottime") if os.environ.get("BENCH_PROFILE") else ()  # the drain, profiled


def entries(callbacks: int, *, attempts: bool = True) -> list[dict[bytes, bytes]]:
    """Status stream entries' fields (as Redis returns them) for ``callbacks`` callbacks' lifecycles (or queueing)."""
    ids = [f"msg_{uuid.uuid4().hex[:24]}" for _ in range(callbacks)]
    out = []
    for start in range(0, callbacks, QUEUED_BATCH):
        rows = [
            (cid, f"https://hooks.example.com/callbacks/{cid}", f"task-{cid[4:16]}")
            for cid in ids[start : start + QUEUED_BATCH]
        ]
        out.append({b"u": status.encode_queued(rows, T0).encode()})
    for start in range(0, callbacks if attempts else 0, SETTLE_BATCH):
        updates = []
        for i, cid in enumerate(ids[start : start + SETTLE_BATCH]):
            at, ok = T0 + 1000 + i, i % 8 != 0  # one in eight is retried
            updates.append(status.callback_sending(cid, 1, at))
            updates += status.callback_attempted(
                cid, attempt=1, state="delivered" if ok else "retrying", status_code=204 if ok else 503,
                error=None if ok else "retrying: HTTP 503", started_at=at, duration_ms=12.3456,
                outcome="delivered" if ok else "retrying", next_attempt_at=None if ok else at + 30_000, at=at + 13,
            )  # fmt: skip
        out.append({b"u": status.encode(updates).encode()})
    return out


def work(raw: list[dict[bytes, bytes]]) -> int:
    """What the writer does in Python for these entries; returns the updates."""
    count, batch = 0, []
    for index, fields in enumerate(raw):
        entry = decode_entry(f"1-{index}", fields)
        batch += entry.updates
        count += len(entry.updates)
        if len(batch) >= FLUSH:
            for name, changes in by_table(merge(batch)).items():
                sql.payload(RULES[name], changes)
            batch = []
    return count


def cpu(callbacks: int = 20_000, rounds: int = 5) -> float:
    """CPU µs per update (best of ``rounds``), printed with the µs per callback."""
    raw = entries(callbacks)
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        updates = work(raw)
        best = min(best, time.process_time() - started)
    per_update, per_callback = best / updates * 1e6, best / callbacks * 1e6
    print(f"writer CPU: {per_update:.2f} µs/update, {per_callback:.1f} µs/callback ({updates} updates)")
    return per_update


def profile(callbacks: int = 20_000) -> None:
    """Print the top of a cProfile of :func:`work`."""
    raw = entries(callbacks)
    profiler = cProfile.Profile()
    profiler.runcall(work, raw)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(18)


def rss(callbacks: int = 100_000, *, attempts: bool = False, postgres: bool = False) -> dict[str, Any]:
    """Queue ``callbacks`` callbacks' status entries (their attempts too), then drain them in a fresh process."""
    import redis

    from bench.status_bench import scratch_database
    from worker.storage.migrate import upgrade
    from worker.streams.keys import Keys

    keys = Keys(f"benchrss{uuid.uuid4().hex[:8]}")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for fields in entries(callbacks, attempts=attempts):
            client.xadd(keys.status_updates, fields)  # type: ignore[arg-type]
        with tempfile.TemporaryDirectory() as scratch, scratch_database() as pg_url:
            url = pg_url if postgres else f"sqlite:///{scratch}/status.db"
            upgrade(url)  # here: the writer process does not migrate (a PostgreSQL one never does)
            child = subprocess.run(
                [sys.executable, *PROFILED, "-m", "bench.status_cpu", "drain", keys.namespace, url],
                capture_output=True, text=True, timeout=600, check=True,
            )  # fmt: skip
        print(child.stdout.strip())
        return dict(json.loads(child.stdout))
    finally:
        for key in client.scan_iter(match=f"{keys.namespace}:*"):
            client.delete(key)
        client.close()


def drain(namespace: str, url: str) -> None:
    """The child of :func:`rss`: a writer drains the stream; prints its RSS at start, its peak and its CPU."""
    import redis

    from worker.storage.apply import StatusStore
    from worker.storage.engine import make_engine
    from worker.storage.writer import FlushResult, StatusWriter
    from worker.streams.keys import Keys

    engine = make_engine(url)
    start_rss = _memory("VmRSS")
    client = redis.Redis.from_url(REDIS_URL)

    class Counting(StatusWriter):
        applied = 0

        def flush(self) -> FlushResult:
            result = super().flush()
            self.applied += result.updates
            return result

    writer = Counting(client, StatusStore(engine), Keys(namespace), consumer="bench", flush_size=500)
    started = time.process_time()
    writer.run(burst=True)
    updates = writer.applied
    used = time.process_time() - started
    peak = _memory("VmHWM")
    with engine.connect() as connection:
        (rows,) = connection.exec_driver_sql("SELECT count(*) FROM callbacks").one()
    print(
        json.dumps(
            {
                "updates": updates,
                "cpu_us_per_update": round(used / max(1, updates) * 1e6, 2),
                "rows": rows,
                "rss_start_mb": round(start_rss / 1024, 1),
                "rss_peak_mb": round(peak / 1024, 1),
                "cpu_s": round(used, 2),
            }
        )
    )


def _memory(field: str) -> int:
    """A ``/proc/self/status`` figure in kB (``VmHWM``: the peak RSS, reset at exec, unlike ``ru_maxrss``)."""
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(f"{field}:"))


def run() -> list[dict[str, Any]]:
    """Report rows (metric, ours, unit, target): CPU per update, and memory and CPU draining a backlog."""
    backlog, lifecycles = rss(postgres=True), rss(20_000, attempts=True, postgres=True)
    return [
        {"metric": "status writer: CPU per update (decode, check, merge, parameters)", "ours": round(cpu(), 2),
         "unit": "µs", "target": "half of before"},
        {"metric": "status writer: peak RSS draining 100,000 queued (PostgreSQL)", "ours": backlog["rss_peak_mb"],
         "unit": "MB", "target": "<= 80 MB"},
        {"metric": "status writer: CPU per update draining lifecycles (PostgreSQL)",
         "ours": lifecycles["cpu_us_per_update"], "unit": "µs", "target": "half of before"},
    ]  # fmt: skip


def main(argv: list[str]) -> None:
    """Dispatch on the first argument."""
    what = argv[0] if argv else "cpu"
    handlers: dict[str, Any] = {
        "cpu": cpu,
        "profile": profile,
        "rss": rss,
        "rss-pg": lambda: rss(postgres=True),
        "lifecycle": lambda: rss(20_000, attempts=True),
        "lifecycle-pg": lambda: rss(20_000, attempts=True, postgres=True),
    }
    if what == "drain":
        drain(argv[1], argv[2])
    else:
        handlers[what]()


if __name__ == "__main__":
    main(sys.argv[1:])
