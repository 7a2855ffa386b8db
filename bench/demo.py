"""``make demo``: watch the callback worker deliver a few thousand webhooks, retries and dead letters included.

It starts a private ``redis-server`` on a free port (or uses ``REDIS_URL``,
under a namespace of its own that it deletes afterwards), a local receiver
in this process, and a real ``dramatiq worker.actors`` process paced at
500 callbacks/s. Most callbacks go to ``/ok``; some to ``/flaky/1`` (one 500,
then delivered on the retry), ``/status/500`` (retried, then dead-lettered)
and ``/status/404`` (dead-lettered at once). A progress line shows deliveries
as they happen; a summary closes. It stops by itself within about a minute
and leaves nothing running.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import redis
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from testkit.receiver import Arrival, Receiver
from worker.producer import CallbackRequest
from worker.storage.engine import make_engine
from worker.storage.models import Callback
from worker.streams.keys import Keys

from . import workload
from .harness import SECRET, CallbackWorker, PrivateRedis, percentile, wait_until

TOTAL = 3000
# Of every 100 callbacks: where they go.
MIX = (("/ok", 90), ("/flaky/1", 5), ("/status/500", 3), ("/status/404", 2))
SETTINGS = {
    "CALLBACK_RATE": 500,
    "CALLBACK_BATCH_SIZE": 250,
    "CALLBACK_MIN_INTERVAL": 0.5,
    "CALLBACK_RETRY_SCHEDULE": "1,2",  # three attempts: now, ~1 s later, ~2 s after that
    "CALLBACK_MAX_DELAY": 0.2,
    "CALLBACK_HOST_CONCURRENCY": 32,
}
DEADLINE = 40.0  # seconds from the enqueue; the run is over long before
DELIVERED_PATHS = ("/ok", "/flaky/1")


@dataclass(frozen=True)
class Tally:
    """The worker's own counters, and the dead-letter stream's length."""

    delivered: int
    retried: int
    dead: int

    @classmethod
    def read(cls, client: redis.Redis, keys: Keys) -> Tally:
        """Read them from Redis."""
        stats = {key.decode(): int(value) for key, value in client.hgetall(keys.stats).items()}  # type: ignore[union-attr]
        return cls(stats.get("delivered", 0), stats.get("retried", 0), int(client.xlen(keys.dead)))


def destinations(total: int) -> list[str]:
    """The path of each callback, spread evenly over the run."""
    cycle = [path for path, share in MIX for _ in range(share)]
    stride = 37  # coprime with 100: consecutive callbacks go to different paths
    return [cycle[(n * stride) % len(cycle)] for n in range(total)]


class ProgressLine:
    """A bar of settled callbacks, the counters and the delivery rate over the last second.

    On a terminal it redraws one line (carriage return); otherwise it prints a line every few seconds.
    """

    def __init__(self, total: int, width: int = 32) -> None:
        self.total = total
        self.width = width
        self.tty = sys.stdout.isatty()
        self._samples: deque[tuple[float, int]] = deque()
        self._printed = 0.0

    def show(self, tally: Tally) -> None:
        """Draw the line for ``tally``."""
        now = time.monotonic()
        self._samples.append((now, tally.delivered))
        while now - self._samples[0][0] > 1.0:
            self._samples.popleft()
        first_at, first_count = self._samples[0]
        rate = (tally.delivered - first_count) / (now - first_at) if now > first_at else 0.0
        settled = tally.delivered + tally.dead
        filled = self.width * settled // self.total
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {settled:>5}/{self.total}  delivered "
            f"{tally.delivered:>5}  retried {tally.retried:>4}  dead {tally.dead:>3}  {rate:4.0f}/s "
        )
        if self.tty:
            sys.stdout.write("\r" + line)
        elif now - self._printed >= 2.0 or settled >= self.total:
            sys.stdout.write(line + "\n")
            self._printed = now
        sys.stdout.flush()

    def close(self) -> None:
        """End the redrawn line."""
        if self.tty:
            sys.stdout.write("\n")


@contextmanager
def redis_server(stack: ExitStack) -> Iterator[tuple[str, redis.Redis]]:
    """``REDIS_URL`` if set, else a private server; yields (url, client)."""
    url = os.environ.get("REDIS_URL")
    if url:
        client = redis.Redis.from_url(url, socket_timeout=10)
        try:
            yield url, client
        finally:
            client.close()
        return
    server = stack.enter_context(PrivateRedis())
    print(f"redis:    a private redis-server on 127.0.0.1:{server.port} (nothing saved)")
    yield server.url, server.client


def delete_namespace(client: redis.Redis, keys: Keys) -> None:
    """Delete every key of the demo's namespace (and only those)."""
    for pattern in keys.all_patterns():
        names = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(names), 500):
            client.delete(*names[start : start + 500])


def summary(tally: Tally, arrivals: list[Arrival], sent: dict[str, float], started: float) -> str:
    """The closing lines: counts, pace and latencies."""
    first: dict[str, float] = {}
    delivered_at: dict[str, float] = {}
    for arrival in arrivals:
        first.setdefault(arrival.webhook_id, arrival.at)
        if arrival.path in DELIVERED_PATHS:
            delivered_at[arrival.webhook_id] = arrival.at  # the last attempt is the one that succeeded
    to_first = [(at - sent[cid]) * 1000 for cid, at in first.items() if cid in sent]
    to_delivery = [(at - sent[cid]) * 1000 for cid, at in delivered_at.items() if cid in sent]
    span = max(first.values(), default=started) - started
    verified = sum(arrival.verified is True for arrival in arrivals)
    return "\n".join(
        [
            f"delivered {tally.delivered} of {len(sent)}, retried {tally.retried} times, dead {tally.dead} "
            "(in the dead-letter stream, with the reason)",
            f"first attempts reached the receiver at {len(first) / span if span else 0:.0f}/s (paced at "
            f"{SETTINGS['CALLBACK_RATE']}/s); {len(arrivals)} requests, {verified} signatures verified",
            f"enqueue -> first attempt: p50 {percentile(to_first, 50):.0f} ms, p99 {percentile(to_first, 99):.0f} ms",
            f"enqueue -> delivered (retries included): p50 {percentile(to_delivery, 50):.0f} ms, "
            f"p99 {percentile(to_delivery, 99):.0f} ms",
        ]
    )


def database_summary(database_url: str, expected: int, timeout: float = 10.0) -> str:
    """The ``callbacks`` table by status, once the status writer has caught up (or after ``timeout``)."""
    engine = make_engine(database_url)
    by_status: dict[str, int] = {}

    def settled() -> bool:
        nonlocal by_status
        try:
            with engine.connect() as connection:
                rows = connection.execute(select(Callback.status, func.count()).group_by(Callback.status)).all()
        except SQLAlchemyError:
            return False  # the writer has not created the tables yet
        by_status = {str(state): int(count) for state, count in rows}
        return by_status.get("delivered", 0) + by_status.get("dead", 0) >= expected

    wait_until(settled, timeout, 0.2)
    engine.dispose()
    states = ", ".join(f"{state} {count}" for state, count in sorted(by_status.items())) or "no rows yet"
    return f"database: callbacks table ({database_url}): {states}"


def run() -> int:
    """Run the demo; 0 when every callback settled in time."""
    with ExitStack() as stack, redis_server(stack) as (url, client):
        namespace = f"demo-{uuid.uuid4().hex[:8]}"
        keys = Keys(namespace)
        stack.callback(delete_namespace, client, keys)
        receiver = Receiver(SECRET).start()
        stack.callback(receiver.stop)
        print(f"receiver: {receiver.url} in this process: {', '.join(path for path, _ in MIX)}")
        worker = stack.enter_context(CallbackWorker(url, namespace, SETTINGS))
        print(f"worker:   dramatiq worker.actors, pid {worker.proc.pid}, namespace {namespace}, log {worker.log}")
        worker.wait_ready(client, timeout=20)
        producer = worker.producer()
        stack.callback(producer.close)
        requests = [
            CallbackRequest(receiver.url + path, workload.payload(n), f"task-{n}")
            for n, path in enumerate(destinations(TOTAL))
        ]
        started = time.time()
        sent = dict.fromkeys(producer.enqueue_many(requests), started)
        print(f"enqueued {TOTAL} callbacks in one round trip ({(time.time() - started) * 1000:.0f} ms)")
        line = ProgressLine(TOTAL)
        tally = Tally.read(client, keys)
        while time.time() - started < DEADLINE and tally.delivered + tally.dead < TOTAL:
            time.sleep(0.1)
            worker.check()
            tally = Tally.read(client, keys)
            line.show(tally)
        line.close()
        print(summary(tally, receiver.snapshot(), sent, started))
        print(database_summary(worker.env["DATABASE_URL"], expected=len(sent)))
        done = tally.delivered + tally.dead >= TOTAL
        if not done:
            print(f"stopped waiting after {DEADLINE:g} s with {TOTAL - tally.delivered - tally.dead} unsettled")
        print("stopping the worker and cleaning up ...")
    return 0 if done else 1


if __name__ == "__main__":
    raise SystemExit(run())
