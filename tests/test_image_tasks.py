"""Image-edit tasks end to end: task in, file saved, status recorded, signed callback with the image out."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import pytest
import redis
from conftest import free_port, recorded_updates, run_burst, wait_until
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message
from image_fixtures import jpeg, png_rgba
from PIL import Image
from sqlalchemy import insert, select

from worker.storage.engine import make_engine
from worker.storage.migrate import upgrade
from worker.storage.models import Callback, ImageEditTask
from worker.streams.keys import Keys
from worker.tasks import InvalidTask, TaskRunner

pytest_plugins = ("storage_fixtures",)


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture
def runner(make_settings, media, redis_url):
    def build(**overrides) -> TaskRunner:
        settings = make_settings(MEDIA_ROOT=str(media), **overrides)
        return TaskRunner(settings, redis.Redis.from_url(settings.redis_url), None)

    return build


def task_updates(rclient, keys: Keys, task_id: str) -> list[dict]:
    return [u.fields for u in recorded_updates(rclient, keys) if u.table == "image_edit_tasks" and u.key == task_id]


def test_a_task_dict_saves_the_result_and_its_callback_carries_the_image(runner, receiver, rclient, keys, media):
    task_runner = runner()
    task = {
        "task_id": "t-1",
        "image": base64.b64encode(jpeg((1000, 500))).decode(),
        "callback_url": f"{receiver.url}/ok",
    }

    payload = task_runner.process(task)

    assert payload["status"] == "success" and payload["task_id"] == "t-1"
    saved = media / payload["image_path"]
    assert saved.is_file() and payload["image_path"].startswith("image_editor/")
    assert base64.b64decode(payload["image"]) == saved.read_bytes()
    assert Image.open(saved).size == (700, 350)  # the shorter side is 350
    assert set(payload["timings"]) >= {"decode", "resize", "save"}
    assert payload["finished_at"].endswith("Z")

    run_burst(task_runner.settings)

    (arrival,) = receiver.snapshot()
    assert arrival.verified is True
    assert json.loads(arrival.body) == payload
    states = [u.get("status") for u in task_updates(rclient, keys, "t-1")]
    assert states[:2] == ["running", "success"]
    assert task_updates(rclient, keys, "t-1")[-1]["callback_status"] == "queued"


def test_a_bad_image_fails_the_task_with_a_clear_error_in_the_callback(runner, receiver, rclient, keys):
    task_runner = runner()
    task = {
        "task_id": "t-bad",
        "image": base64.b64encode(b"not an image").decode(),
        "callback_url": f"{receiver.url}/ok",
    }

    payload = task_runner.process(task)
    run_burst(task_runner.settings)

    assert payload["status"] == "failed"
    assert payload["error"]["code"] == "corrupt" and payload["error"]["stage"] == "decode"
    assert "image" not in payload
    assert json.loads(receiver.snapshot()[0].body) == payload
    final = task_updates(rclient, keys, "t-bad")[1]
    assert final["status"] == "failed" and final["error_code"] == "corrupt"


def test_without_a_callback_url_the_callback_is_not_required(runner, rclient, keys):
    task_runner = runner()
    task_runner.process({"task_id": "t-quiet", "image": base64.b64encode(png_rgba((400, 400))).decode()})

    assert task_updates(rclient, keys, "t-quiet")[-1] == {"callback_status": "not_required"}
    assert rclient.xlen(keys.stream) == 0


def test_immediate_mode_delivers_without_the_stream(runner, receiver, rclient, keys):
    task_runner = runner(CALLBACK_IMMEDIATE="1")
    task_runner.process(
        {"task_id": "t-now", "image": base64.b64encode(jpeg()).decode(), "callback_url": f"{receiver.url}/ok"}
    )

    assert len(receiver.ids()) == 1 and receiver.snapshot()[0].verified
    assert rclient.xlen(keys.stream) == 0
    assert task_updates(rclient, keys, "t-now")[-1]["callback_status"] == "delivered"


def test_immediate_delivery_hands_a_retry_to_the_leader(runner, receiver, rclient, keys):
    task_runner = runner(CALLBACK_IMMEDIATE="1", CALLBACK_RETRY_SCHEDULE="60")
    task_runner.process(
        {"task_id": "t-flaky", "image": base64.b64encode(jpeg()).decode(), "callback_url": f"{receiver.url}/flaky/1"}
    )

    assert rclient.zcard(keys.delayed) == 1  # the second attempt waits in the delayed set, same webhook-id
    (member,) = rclient.zrange(keys.delayed, 0, -1)
    assert json.loads(member)["cid"] == receiver.ids()[0] and json.loads(member)["att"] == "1"


def test_when_redis_refuses_the_enqueue_the_callback_is_delivered_immediately(make_settings, media, receiver):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(MEDIA_ROOT=str(media), REDIS_URL=dead_redis)
    task_runner = TaskRunner(settings, redis.Redis.from_url(dead_redis, socket_connect_timeout=0.2), None)

    payload = task_runner.process(
        {"task_id": "t-fallback", "image": base64.b64encode(jpeg()).decode(), "callback_url": f"{receiver.url}/ok"}
    )

    assert payload["status"] == "success"
    assert len(receiver.ids()) == 1 and json.loads(receiver.snapshot()[0].body) == payload


def test_a_task_id_is_loaded_from_the_database(make_settings, media, receiver, sqlite_url):
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    (media / "uploads").mkdir()
    (media / "uploads" / "in.jpg").write_bytes(jpeg((600, 900)))
    now = time.time()
    with engine.begin() as connection:
        connection.execute(
            insert(ImageEditTask).values(
                task_id="t-row",
                status="queued",
                input_path="uploads/in.jpg",
                callback_url=f"{receiver.url}/ok",
                stages=["validate", "resize", "format"],
                params={"jpeg_quality": 70},
                created_at=_dt(now),
                updated_at=_dt(now),
            )
        )
    settings = make_settings(MEDIA_ROOT=str(media), DATABASE_URL=sqlite_url)
    task_runner = TaskRunner(settings, redis.Redis.from_url(settings.redis_url), engine)

    payload = task_runner.process("t-row")

    assert payload["status"] == "success"
    assert Image.open(io.BytesIO(base64.b64decode(payload["image"]))).size == (350, 525)
    with pytest.raises(InvalidTask, match="no image_edit_tasks row has task_id 'missing'"):
        task_runner.process("missing")
    engine.dispose()


DEEP: list = []
_level = DEEP
for _ in range(965):  # deep enough to stop a JSON decoder downstream, had it been accepted
    _level.append([])
    _level = _level[0]


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"image": "eA=="}, "'task_id' must be a non-empty string"),
        ({"task_id": "t", "image": "eA==", "image_path": "a.jpg"}, "exactly one of 'image'"),
        ({"task_id": "t"}, "exactly one of 'image'"),
        ({"task_id": "t", "image": "eA==", "colour": "red"}, "unknown task keys \\['colour'\\]"),
        ({"task_id": "t", "image": "eA==", "stages": "resize"}, "'stages' must be a list"),
        ({"task_id": "t", "image": "eA==", "params": [1]}, "'params' must be an object"),
        (["t"], "a task is a dict or a task id string"),
        ({"task_id": "t\udcff", "image": "eA=="}, "'task_id' must be a non-empty string"),
        ({"task_id": "t\x00", "image": "eA=="}, "'task_id' must be a non-empty string"),
        ({"task_id": "t", "image": "eA==", "params": {"p": DEEP}}, "'params' nest deeper than 32 levels"),
    ],
)
def test_malformed_tasks_are_refused_with_a_clear_error(runner, task, message):
    with pytest.raises(InvalidTask, match=message):
        runner().process(task)


@pytest.mark.slow
def test_a_real_worker_runs_a_task_and_the_database_shows_it(start_worker, make_settings, media, receiver, sqlite_url):
    upgrade(sqlite_url)
    settings = make_settings(MEDIA_ROOT=str(media), DATABASE_URL=sqlite_url)
    start_worker(threads=4, MEDIA_ROOT=str(media), DATABASE_URL=sqlite_url)
    broker = RedisBroker(url=settings.redis_url, namespace=Keys(settings.namespace).dramatiq_namespace)
    task = {
        "task_id": "t-e2e",
        "image": base64.b64encode(jpeg((800, 800))).decode(),
        "callback_url": f"{receiver.url}/ok",
    }
    broker.enqueue(
        Message(queue_name="images", actor_name="process_image_edit_task", args=(task,), kwargs={}, options={})
    )

    assert receiver.wait_for(1, timeout=60)
    body = json.loads(receiver.snapshot()[0].body)
    assert receiver.snapshot()[0].verified and body["status"] == "success"
    assert Image.open(io.BytesIO(base64.b64decode(body["image"]))).size == (350, 350)
    assert (media / body["image_path"]).is_file()

    engine = make_engine(sqlite_url)

    def row_done() -> bool:
        with engine.connect() as connection:
            task_row = connection.execute(select(ImageEditTask).where(ImageEditTask.task_id == "t-e2e")).first()
            callback = connection.execute(select(Callback).where(Callback.task_id == "t-e2e")).first()
        return bool(task_row and callback and task_row.status == "success" and callback.status == "delivered")

    assert wait_until(row_done, 30)
    with engine.connect() as connection:
        task_row = connection.execute(select(ImageEditTask).where(ImageEditTask.task_id == "t-e2e")).one()
    assert task_row.result_path == body["image_path"] and task_row.callback_status == "queued"
    assert task_row.started_at is not None and task_row.finished_at is not None and "resize" in task_row.timings
    engine.dispose()
    broker.close()


def _dt(seconds: float):
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.UTC)
