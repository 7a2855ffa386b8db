"""What CALLBACK_AFTER_COMMIT costs an idle worker: ``python -m bench.after_commit [--tasks N] [--immediate]``.

For each mode a fresh worker (``dramatiq worker.actors``, two processes, SQLite,
shipped defaults otherwise) on a private Redis runs image tasks one at a time,
``--spacing`` seconds apart (a small JPEG each, after a short warm-up). A receiver
in this process notes each callback's arrival and reads the task's row from the
worker's database right then. Per mode:

- task enqueued -> callback arrived (what a customer waits, the image work included),
- task finished (the payload's ``finished_at``) -> callback arrived (the callback's own path),
- how many arrivals found the row not yet final (the race the setting closes).

Ratios are against the first mode, the setting off, run in the same process.
Everything started here is stopped here; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import io
import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message
from sqlalchemy import create_engine, select
from sqlalchemy.exc import SQLAlchemyError

from testkit.receiver import BackgroundServer
from worker.storage.models import ImageEditTask
from worker.streams.keys import Keys

from .harness import CallbackWorker, PrivateRedis, percentile, wait_until
from .image_bench import photo

WARM_UP = 5
MODES: dict[str, Mapping[str, object]] = {
    "off": {},
    "after commit": {"CALLBACK_AFTER_COMMIT": 1},
}
IMMEDIATE_MODES: dict[str, Mapping[str, object]] = {
    "immediate": {"CALLBACK_IMMEDIATE": 1},
    "immediate + after commit": {"CALLBACK_IMMEDIATE": 1, "CALLBACK_AFTER_COMMIT": 1},
}


@dataclass(frozen=True)
class Arrival:
    """One callback as the receiver saw it: when, the task's finish time, and the row's status right then."""

    at: float
    finished: float
    sent: str
    row: str | None


class RowReadingReceiver:
    """Notes each callback's arrival and reads its task's row from ``database`` before answering 204."""

    def __init__(self, database: Path) -> None:
        self.engine = create_engine(f"sqlite:///{database}")
        self.arrivals: dict[str, Arrival] = {}  # task id -> its first arrival
        self._lock = threading.Lock()
        self._server = BackgroundServer(self._app, "after-commit-receiver")
        self.url = f"http://127.0.0.1:{self._server.start()}/hook"

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        at = time.time()
        body = json.loads(await request.read())
        row = await asyncio.get_running_loop().run_in_executor(None, self._row, body["task_id"])
        finished = dt.datetime.fromisoformat(body["finished_at"].replace("Z", "+00:00")).timestamp()
        with self._lock:
            self.arrivals.setdefault(body["task_id"], Arrival(at, finished, body["status"], row))
        return web.Response(status=204)

    def _row(self, task_id: str) -> str | None:
        try:
            with self.engine.connect() as connection:
                query = select(ImageEditTask.status).where(ImageEditTask.task_id == task_id)
                return connection.execute(query).scalar()
        except SQLAlchemyError:  # the writer has not created the tables yet
            return None

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(1 for task_id in self.arrivals if task_id.startswith(prefix))

    def stop(self) -> None:
        self._server.stop()
        self.engine.dispose()


@dataclass(frozen=True)
class ModeResult:
    """One mode's latencies (seconds) and how many arrivals found the row not yet final."""

    name: str
    from_enqueue: list[float]
    from_finish: list[float]
    stale: int
    missing: int


def run_mode(redis: PrivateRedis, name: str, settings: Mapping[str, object], tasks: int, spacing: float) -> ModeResult:
    """``tasks`` image tasks, one every ``spacing`` s, through a fresh worker with ``settings``."""
    namespace = f"bac{uuid.uuid4().hex[:8]}"
    with CallbackWorker(redis.url, namespace, settings) as worker:
        worker.wait_ready(redis.client)
        receiver = RowReadingReceiver(worker.scratch / "worker.db")
        broker = RedisBroker(url=redis.url, namespace=Keys(namespace).dramatiq_namespace)  # type: ignore[no-untyped-call]
        try:
            _spaced(broker, receiver.url, "warm", WARM_UP, spacing)
            wait_until(lambda: receiver.count("warm-") >= WARM_UP, 60)
            sent = _spaced(broker, receiver.url, "task", tasks, spacing)
            wait_until(lambda: receiver.count("task-") >= tasks, 60)
        finally:
            broker.close()
            receiver.stop()
    arrived = {task_id: receiver.arrivals[task_id] for task_id in sent if task_id in receiver.arrivals}
    return ModeResult(
        name,
        [arrival.at - sent[task_id] for task_id, arrival in arrived.items()],
        [arrival.at - arrival.finished for arrival in arrived.values()],
        sum(1 for arrival in arrived.values() if arrival.row != arrival.sent),
        tasks - len(arrived),
    )


def _spaced(broker: RedisBroker, url: str, prefix: str, count: int, spacing: float) -> dict[str, float]:
    image = base64.b64encode(_jpeg()).decode()
    sent: dict[str, float] = {}
    next_at = time.monotonic()
    for n in range(count):
        task = {"task_id": f"{prefix}-{n}", "image": image, "callback_url": url}
        message = Message(
            queue_name="images", actor_name="process_image_edit_task", args=(task,), kwargs={}, options={}
        )
        sent[task["task_id"]] = time.time()
        broker.enqueue(message)
        next_at += spacing
        time.sleep(max(0.0, next_at - time.monotonic()))
    return sent


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    photo((320, 240), 320).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def table(results: list[ModeResult]) -> str:
    """The results as a text table, ratios of p50 against the first row."""
    head = (
        f"{'mode':<26}{'tasks':>6}  {'enqueue->arrival p50':>21}{'p99':>9}{'x':>6}"
        f"  {'finish->arrival p50':>20}{'p99':>9}{'x':>6}  {'row not final':>13}"
    )
    lines = [head, "-" * len(head)]
    base = results[0]
    for result in results:
        e50, e99 = percentile(result.from_enqueue, 50) * 1000, percentile(result.from_enqueue, 99) * 1000
        f50, f99 = percentile(result.from_finish, 50) * 1000, percentile(result.from_finish, 99) * 1000
        e_ratio = e50 / (percentile(base.from_enqueue, 50) * 1000)
        f_ratio = f50 / (percentile(base.from_finish, 50) * 1000)
        count = len(result.from_enqueue)
        lines.append(
            f"{result.name:<26}{count:>6}  {e50:>18.1f} ms{e99:>6.0f} ms{e_ratio:>5.2f}x"
            f"  {f50:>17.1f} ms{f99:>6.0f} ms{f_ratio:>5.2f}x  {result.stale:>6} of {count:<4}"
            + (f"  ({result.missing} never arrived)" if result.missing else "")
        )
    return "\n".join(lines)


def main() -> None:
    """Run each mode on one private Redis and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=100, help="timed tasks per mode (default 100)")
    parser.add_argument("--spacing", type=float, default=0.25, help="seconds between tasks (default 0.25)")
    parser.add_argument("--immediate", action="store_true", help="also measure CALLBACK_IMMEDIATE=1, without and with")
    options = parser.parse_args()
    modes = {**MODES, **(IMMEDIATE_MODES if options.immediate else {})}
    results = []
    with PrivateRedis() as redis:
        for name, settings in modes.items():
            results.append(run_mode(redis, name, settings, options.tasks, options.spacing))
    print(table(results))


if __name__ == "__main__":
    main()
