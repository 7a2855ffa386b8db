"""No secret in a log line, an error message or ``ops`` output (issue 9).

Real worker processes run failing image tasks and failing deliveries whose
callback URLs carry a token, against a database URL with a password; then
every byte they logged, and every ``ops`` answer, is searched for the secrets
and for the task's image.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import pytest
import redis
from conftest import ROOT, settings_env, wait_until
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message
from image_fixtures import jpeg

from worker.config.settings import Settings
from worker.producer import CallbackProducer
from worker.streams.keys import Keys

pytest_plugins = ("storage_fixtures",)

TOKEN = "TOKEN-7f3a9c"  # in callback URL queries and paths
PASSWORD = "PW-51d0e2"  # in the database URL (a PostgreSQL nobody listens for: the writer waits, saying why)


def _ops(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "ops", *args],
        check=False,
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_failing_tasks_and_deliveries_leave_no_secret_in_any_log(
    start_worker, namespace, redis_url, receiver, tmp_path
):
    database_url = f"postgresql+psycopg2://app:{PASSWORD}@127.0.0.1:1/cb"
    media = tmp_path / "media"
    media.mkdir()
    overrides = {
        "DATABASE_URL": database_url,
        "MEDIA_ROOT": str(media),
        "CALLBACK_RETRY_SCHEDULE": "0.2",
        "CALLBACK_MAX_ATTEMPTS": "2",
    }
    worker = start_worker(threads=2, **overrides)
    env = settings_env(namespace, redis_url, **overrides)
    settings = Settings.from_env(env)
    rclient = redis.Redis.from_url(redis_url)
    image = base64.b64encode(jpeg((400, 300))).decode()
    broker = RedisBroker(url=redis_url, namespace=Keys(namespace).dramatiq_namespace)
    hooks = [f"{receiver.url}/status/{code}/{TOKEN}?token={TOKEN}" for code in (500, 410, 200)]
    tasks = [
        {"task_id": "t-bad-image", "image": base64.b64encode(b"not an image" * 100).decode(), "callback_url": hooks[0]},
        {"task_id": "t-missing", "callback_url": hooks[1]},  # neither image nor image_path: InvalidTask
        {"task_id": "t-bad-url", "image": image, "callback_url": f"ftp://u:{TOKEN}@x/?token={TOKEN}"},
        {"task_id": "t-unknown", "image": image, "callback_url": hooks[2], "surprise": TOKEN},
    ]
    for task in tasks:
        broker.enqueue(
            Message(queue_name="images", actor_name="process_image_edit_task", args=(task,), kwargs={}, options={})
        )
    producer = CallbackProducer(settings)
    for hook in hooks:
        producer.enqueue(hook, {"secret_body": TOKEN})
    producer.close()

    assert receiver.wait_for(3, timeout=60, unique=True)  # the failed task's callback and the queued ones
    assert wait_until(lambda: rclient.xlen(Keys(namespace).dead) >= 2, 60)
    time.sleep(1.0)  # the writer's waiting message about the database is logged too

    answers = [
        _ops(env, "status"),
        _ops(env, "status", "--json"),
        _ops(env, "replay", "--dry-run"),
        _ops(env, "config", "set", "CALLBACK_SIGNING_SECRET=whsec_" + TOKEN),
    ]
    worker.stop()
    broker.close()
    rclient.close()

    logged = worker.output()
    assert "process_image_edit_task" in logged  # the failing tasks were logged, by actor and id
    everything = logged + "".join(a.stdout + a.stderr for a in answers)
    assert TOKEN not in everything
    assert PASSWORD not in everything
    assert image[:200] not in everything
    assert "Traceback" not in "".join(a.stdout + a.stderr for a in answers)
    assert json.loads(answers[1].stdout)["namespace"] == namespace
