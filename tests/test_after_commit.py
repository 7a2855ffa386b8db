"""CALLBACK_AFTER_COMMIT: an image task's callback arrives only once its final row is committed.

The receiver here reads the task's ``image_edit_tasks`` row from the database the
moment a callback arrives (before it answers), as a customer would. Real Redis,
real databases (SQLite; PostgreSQL behind PgBouncer in transaction pooling), real
worker processes; waits are for conditions.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from conftest import run_burst, wait_until
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message
from image_fixtures import jpeg
from sqlalchemy import select

from testkit.receiver import BackgroundServer
from worker.producer import CallbackProducer
from worker.storage.engine import make_engine
from worker.storage.models import ImageEditTask
from worker.storage.service import run_status_writer
from worker.streams import entry as entries
from worker.streams.entry import CallbackEntry, Malformed
from worker.streams.keys import GROUP, STATUS_GROUP, Keys
from worker.streams.protocol import SyncDriver
from worker.streams.status import StatusUpdate, committed, covers, publish_committed, record_status
from worker.tasks import TaskRunner

pytest_plugins = ("storage_fixtures",)

TASKS = 30
FINAL = {"success", "failed"}


class RowReader:
    """A webhook receiver that reads the task's row on arrival: (task id, payload status, row status) per arrival."""

    def __init__(self, database_url: str) -> None:
        self.engine = make_engine(database_url)
        self.seen: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        self._server = BackgroundServer(self._app, "row-reader")
        self.url = ""

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        row = await asyncio.get_running_loop().run_in_executor(None, self.row_status, body["task_id"])
        with self._lock:
            self.seen.append((body["task_id"], body["status"], row))
        return web.Response(status=204)

    def row_status(self, task_id: str) -> str | None:
        with self.engine.connect() as connection:
            return connection.execute(select(ImageEditTask.status).where(ImageEditTask.task_id == task_id)).scalar()

    def tasks(self) -> set[str]:
        with self._lock:
            return {task_id for task_id, _, _ in self.seen}

    def start(self) -> RowReader:
        self.url = f"http://127.0.0.1:{self._server.start()}/hook"
        return self

    def stop(self) -> None:
        self._server.stop()
        self.engine.dispose()


@dataclass
class Scene:
    """What every test here uses: its namespace, settings, clients and the receivers it started."""

    namespace: str
    redis_url: str
    media: Path
    rclient: redis.Redis
    keys: Keys
    make_settings: Any
    readers: list[RowReader] = field(default_factory=list)

    def reader(self, database_url: str) -> RowReader:
        """A started :class:`RowReader` on ``database_url``, stopped after the test."""
        reader = RowReader(database_url).start()
        self.readers.append(reader)
        return reader


@pytest.fixture
def scene(namespace, redis_url, rclient, make_settings, tmp_path: Path) -> Iterator[Scene]:
    media = tmp_path / "media"
    media.mkdir()
    found = Scene(namespace, redis_url, media, rclient, Keys(namespace), make_settings)
    yield found
    for reader in found.readers:
        reader.stop()


def image_tasks(namespace: str, url: str) -> list[dict[str, str]]:
    """Two thirds that succeed, a third that fail (not an image)."""
    good, bad = base64.b64encode(jpeg((64, 48))).decode(), base64.b64encode(b"not an image").decode()
    return [
        {"task_id": f"{namespace}-{n}", "image": bad if n % 3 == 2 else good, "callback_url": url} for n in range(TASKS)
    ]


def send_to_workers(redis_url: str, namespace: str, tasks: list[dict[str, str]]) -> None:
    broker = RedisBroker(url=redis_url, namespace=Keys(namespace).dramatiq_namespace)
    for task in tasks:
        message = Message(
            queue_name="images", actor_name="process_image_edit_task", args=(task,), kwargs={}, options={}
        )
        broker.enqueue(message)
    broker.close()


def assert_every_arrival_saw_its_final_row(reader: RowReader, tasks: list[dict[str, str]]) -> None:
    assert reader.tasks() == {task["task_id"] for task in tasks}
    stale = [(task_id, sent, row) for task_id, sent, row in reader.seen if row != sent]
    assert stale == []  # the row showed the outcome the callback reported, on every arrival
    assert {sent for _, sent, _ in reader.seen} == FINAL


# -- end to end: real worker processes --------------------------------------------------------------


def run_tasks_on_workers(scene: Scene, start_worker, database_url: str, **env: str) -> tuple[RowReader, list]:
    """30 image tasks through real worker processes on ``database_url``; returns once every callback arrived."""
    reader = scene.reader(database_url)
    tasks = image_tasks(scene.namespace, reader.url)
    start_worker(processes=2, threads=4, MEDIA_ROOT=str(scene.media), DATABASE_URL=database_url, **env)
    send_to_workers(scene.redis_url, scene.namespace, tasks)
    assert wait_until(lambda: len(reader.tasks()) == TASKS, 90)
    return reader, tasks


@pytest.mark.slow
def test_every_callback_finds_its_final_row_on_sqlite(scene, start_worker, sqlite_url):
    reader, tasks = run_tasks_on_workers(scene, start_worker, sqlite_url, CALLBACK_AFTER_COMMIT="1")
    assert_every_arrival_saw_its_final_row(reader, tasks)


@pytest.mark.slow
def test_every_callback_finds_its_final_row_on_postgresql_behind_pgbouncer(scene, start_worker, pgbouncer):
    # The worker writes and the receiver reads through the pooler (transaction pooling).
    reader, tasks = run_tasks_on_workers(scene, start_worker, pgbouncer, CALLBACK_AFTER_COMMIT="1")
    assert_every_arrival_saw_its_final_row(reader, tasks)


@pytest.mark.slow
def test_without_the_setting_every_callback_still_arrives(scene, start_worker, sqlite_url):
    reader, tasks = run_tasks_on_workers(scene, start_worker, sqlite_url)  # what a row showed on arrival: chance
    assert {sent for _, sent, _ in reader.seen} == FINAL
    assert wait_until(lambda: all(reader.row_status(task["task_id"]) in FINAL for task in tasks), 30)


# -- the leader's hold, in this process ---------------------------------------------------------------


def final_update(scene: Scene, task_id: str, status: str = "success") -> str:
    """Record a task's final update on shard 0's status stream, as an image task does; its entry id."""
    update = StatusUpdate("image_edit_tasks", task_id, 1, {"status": status})
    entry_id = record_status([update], scene.rclient, scene.keys)
    assert entry_id is not None
    return entry_id


def enqueue_after(settings, url: str, task_id: str, after: str, status: str = "success") -> str:
    """Enqueue a task's callback that waits for status entry ``after``, as an image task does."""
    producer = CallbackProducer(settings)
    try:
        return producer.enqueue(url, {"task_id": task_id, "status": status}, task_id=task_id, after=after)
    finally:
        producer.close()


class LeaderThread:
    """A burst-mode leader in a thread of this process: it returns once the queue is idle."""

    def __init__(self, settings) -> None:
        self.exit = None
        self.thread = threading.Thread(target=self._run, args=(settings,), daemon=True)
        self.thread.start()

    def _run(self, settings) -> None:
        self.exit = run_burst(settings)

    def join(self) -> str:
        self.thread.join(60)
        assert not self.thread.is_alive()
        return self.exit.reason


def read_by_the_leader(scene: Scene) -> bool:
    rclient, stream = scene.rclient, scene.keys.stream
    groups = rclient.xinfo_groups(stream) if rclient.exists(stream) else []
    return any(group["name"] == GROUP and group["pending"] >= 1 for group in groups)


def test_a_callback_waits_until_the_committed_mark_passes_its_task_update(scene, sqlite_url):
    settings = scene.make_settings(DATABASE_URL=sqlite_url)
    reader = scene.reader(sqlite_url)
    task_id = f"{scene.namespace}-held"
    record_status([StatusUpdate("image_edit_tasks", task_id, 0, {"status": "running"})], scene.rclient, scene.keys)
    assert run_status_writer(settings, burst=True) == "idle"  # the mark now stands before the final update
    after = final_update(scene, task_id)
    assert not covers(SyncDriver(scene.rclient).run(committed(scene.keys)), after)
    enqueue_after(settings, reader.url, task_id, after)

    leader = LeaderThread(settings)
    assert wait_until(lambda: read_by_the_leader(scene), 10)
    wait_until(lambda: bool(reader.seen), 0.5)  # many looks at the mark meanwhile: none lets it go
    assert reader.seen == []
    assert reader.row_status(task_id) == "running"

    assert run_status_writer(settings, burst=True) == "idle"
    assert wait_until(lambda: bool(reader.seen), 10)
    assert reader.seen == [(task_id, "success", "success")]
    assert leader.join() == "idle"


def test_held_callbacks_are_deferred_while_no_writer_runs_and_delivered_once_one_does(scene, sqlite_url):
    settings = scene.make_settings(DATABASE_URL=sqlite_url)
    reader = scene.reader(sqlite_url)
    rclient, keys = scene.rclient, scene.keys
    ids = [f"{scene.namespace}-{n}" for n in range(3)]
    for task_id in ids:
        enqueue_after(settings, reader.url, task_id, final_update(scene, task_id, "failed"), "failed")

    leader = LeaderThread(settings)  # no status writer: nothing is ever committed
    assert wait_until(lambda: int(rclient.hget(keys.stats, "deferred") or 0) >= 2 * len(ids), 30)
    assert reader.seen == []
    assert rclient.xlen(keys.stream) + rclient.zcard(keys.delayed) == len(ids)  # each is somewhere: none lost

    assert run_status_writer(settings, burst=True) == "idle"
    assert wait_until(lambda: len(reader.seen) == len(ids), 15)
    assert sorted(reader.seen) == [(task_id, "failed", "failed") for task_id in ids]
    assert leader.join() == "idle"


def test_a_retry_does_not_wait_for_the_mark(scene, sqlite_url):
    reader = scene.reader(sqlite_url)
    ahead = "99999999999999-0"  # a status entry no writer commits for a long time
    body = json.dumps({"task_id": "t-r", "status": "failed"})
    retry = CallbackEntry("msg_retry", reader.url, body, "t-r", attempts=1, first_enqueued_ms=1, enqueued_ms=1)
    scene.rclient.xadd(scene.keys.stream, {**retry.fields(), "after": ahead})

    assert run_burst(scene.make_settings()).reason == "idle"
    assert [(task_id, sent) for task_id, sent, _ in reader.seen] == [("t-r", "failed")]


def test_a_garbage_after_is_set_aside_as_malformed_with_the_reason(scene, receiver):
    rclient, keys = scene.rclient, scene.keys
    good = CallbackEntry("msg_good", f"{receiver.url}/ok", "{}", "t-g", 0, 1, 1)
    rclient.xadd(keys.stream, {**CallbackEntry("msg_bad", good.url, "{}").fields(), "after": "12-x"})
    rclient.xadd(keys.stream, good.fields())

    assert run_burst(scene.make_settings()).reason == "idle"
    assert receiver.ids() == ["msg_good"]
    ((_, letter),) = rclient.xrange(keys.dead)
    assert letter["reason"] == "malformed: 'after' is not a stream id (<ms>-<seq>, two unsigned 64-bit integers)"
    assert letter["raw.after"] == "12-x"


# -- immediate delivery ---------------------------------------------------------------------------------


class WriterThread:
    """The status writer (every shard, under its lease) in a thread of this process, until stopped."""

    def __init__(self, settings) -> None:
        self.stop = threading.Event()
        options = {"should_stop": self.stop.is_set}
        self.thread = threading.Thread(target=run_status_writer, args=(settings,), kwargs=options)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)


def immediate_settings(scene: Scene, database_url: str):
    return scene.make_settings(
        MEDIA_ROOT=str(scene.media), DATABASE_URL=database_url, CALLBACK_IMMEDIATE="1", CALLBACK_AFTER_COMMIT="1"
    )


def test_immediate_delivery_waits_for_the_commit(scene, sqlite_url):
    settings = immediate_settings(scene, sqlite_url)
    reader = scene.reader(sqlite_url)
    runner = TaskRunner(settings, redis.Redis.from_url(settings.redis_url))
    writer = WriterThread(settings)
    try:
        assert wait_until(lambda: bool(scene.rclient.exists(scene.keys.status_lease)), 10)
        for task in image_tasks(scene.namespace, reader.url)[:3]:
            runner.process(task)
    finally:
        writer.finish()
    assert [sent for _, sent, _ in reader.seen] == ["success", "success", "failed"]
    assert [row for _, _, row in reader.seen] == ["success", "success", "failed"]
    assert scene.rclient.xlen(scene.keys.stream) == 0  # delivered straight away, not through the queue


def test_immediate_delivery_without_a_writer_queues_the_callback_to_wait(scene, sqlite_url):
    settings = immediate_settings(scene, sqlite_url)
    reader = scene.reader(sqlite_url)
    (task,) = image_tasks(scene.namespace, reader.url)[:1]
    TaskRunner(settings, redis.Redis.from_url(settings.redis_url)).process(task)

    assert reader.seen == []
    ((_, fields),) = scene.rclient.xrange(scene.keys.stream)
    updates = scene.rclient.xrange(scene.keys.status_updates)
    finals = [sid for sid, entry in updates if '"status":"success"' in entry["u"]]
    assert fields["after"] == finals[0]  # it waits for the task's final update

    assert run_status_writer(settings, burst=True) == "idle"
    assert run_burst(settings).reason == "idle"
    assert reader.seen == [(task["task_id"], "success", "success")]


# -- the committed mark and the entry field -----------------------------------------------------------


def test_the_mark_moves_only_forward_and_never_past_a_pending_entry(rclient, keys):
    driver = SyncDriver(rclient)
    rclient.xgroup_create(keys.status_updates, STATUS_GROUP, id="0", mkstream=True)
    assert driver.run(publish_committed(keys, "100-5")) == "100-5"
    assert driver.run(publish_committed(keys, "90-0")) == "100-5"  # a new writer's older claimed entries
    for sid in ("200-0", "200-1", "300-10", "1000-0"):
        rclient.xadd(keys.status_updates, {"u": "[]"}, id=sid)
    rclient.xreadgroup(STATUS_GROUP, "someone", {keys.status_updates: ">"})
    rclient.xack(keys.status_updates, STATUS_GROUP, "200-0")
    assert driver.run(publish_committed(keys, "300-10")) == "200-0"  # 200-1 is still pending
    rclient.xack(keys.status_updates, STATUS_GROUP, "200-1", "300-10")
    assert driver.run(publish_committed(keys, "1000-0")) == "999-18446744073709551615"
    rclient.xack(keys.status_updates, STATUS_GROUP, "1000-0")
    assert driver.run(publish_committed(keys.of_shard(1), "1000-0")) == "1000-0"  # always shard 0's mark
    assert driver.run(committed(keys.of_shard(3))) == "1000-0"
    assert covers("1000-0", "1000-0") and covers("1000-0", "999-7") and not covers("1000-0", "1000-1")
    assert not covers(None, "1-0") and not covers("garbage", "1-0")


@pytest.mark.parametrize(
    "value",
    ["", "12", "12-", "-3", "12-x", "1.5-0", "١٢-٣", "18446744073709551616-0", "1-18446744073709551616", "1-2-3"],
)
def test_an_after_that_is_not_a_stream_id_makes_the_entry_malformed(value):
    fields = {**CallbackEntry("msg_a", "https://example.com/", "{}").fields(), "after": value}
    decoded = entries.decode("5-0", fields)
    assert isinstance(decoded, Malformed)
    assert decoded.reason.startswith("'after' is not a stream id")


def test_entries_with_and_without_after_decode_and_retries_and_replays_drop_it():
    plain = CallbackEntry("msg_a", "https://example.com/", "{}", "t")
    assert "after" not in plain.fields() and entries.decode("5-0", plain.fields()).after is None  # older entries
    waiting = CallbackEntry("msg_a", "https://example.com/", "{}", "t", after="1700000000000-3")
    assert entries.decode("5-0", waiting.fields()).after == "1700000000000-3"
    assert CallbackEntry.from_member(waiting.member()).after == "1700000000000-3"  # a deferral keeps it
    assert waiting.next_attempt().after is None
    assert entries.replay_of(waiting, {}, 1).after is None
