"""Run-time configuration in Redis: validated, versioned, applied by running processes without a restart."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys

import pytest
import redis
from conftest import ROOT, SECRET, run_burst, settings_env, wait_until
from image_fixtures import jpeg
from PIL import Image
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from testkit.receiver import Receiver
from worker.config.runtime import ConfigStore, apply
from worker.errors import SettingsError
from worker.producer import CallbackProducer
from worker.tasks import TaskRunner

NEW_SECRET = "whsec_" + base64.b64encode(b"another key of thirty-two bytes!").decode()


@pytest.mark.parametrize(
    ("values", "attr", "expected"),
    [
        ({"CALLBACK_RATE": "250"}, "rate", 250.0),
        ({"CALLBACK_BATCH_SIZE": "50", "CALLBACK_RATE": "20"}, "batch_size", 50),
        ({"CALLBACK_HOST_CONCURRENCY": "3"}, "host_concurrency", 3),
        ({"CALLBACK_IMMEDIATE": "on"}, "immediate", True),
        ({"IMAGE_STAGES": "validate,format"}, "image_stages", ("validate", "format")),
        ({"CALLBACK_SIGNING_SECRETS": json.dumps({"https://a.example/": NEW_SECRET})}, "signing_secrets", None),
    ],
)
def test_valid_changes_apply_on_top_of_the_environment(make_settings, values, attr, expected):
    settings = apply(make_settings(), values)
    if expected is not None:
        assert getattr(settings, attr) == expected
    assert settings.redis_url == make_settings().redis_url  # everything else stays


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"CALLBACK_RATE": "fast"}, "CALLBACK_RATE='fast' is invalid"),
        ({"CALLBACK_RATE": "999999"}, "exceeds CALLBACK_BATCH_SIZE / CALLBACK_MIN_INTERVAL"),
        ({"REDIS_URL": "redis://elsewhere:6379/0"}, "REDIS_URL cannot be changed at run time; these can:"),
        ({"IMAGE_STAGES": "validate,sharpen"}, "sharpen"),
        ({"CALLBACK_SIGNING_SECRET": "not-a-secret"}, "CALLBACK_SIGNING_SECRET='<redacted>' is invalid"),
    ],
)
def test_invalid_changes_are_refused_with_a_clear_error(make_settings, values, message):
    with pytest.raises(SettingsError, match=message):
        apply(make_settings(), values)


def run_ops(namespace: str, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(namespace, redis_url), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "ops", "config", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


def test_ops_config_refuses_an_invalid_change_and_keeps_the_old_one(namespace, redis_url):
    assert run_ops(namespace, redis_url, "set", "CALLBACK_RATE=300").returncode == 0
    refused = run_ops(namespace, redis_url, "set", "CALLBACK_RATE=300", "CALLBACK_HOST_CONCURRENCY=0")
    assert refused.returncode == 1
    assert (
        "refused, the configuration in force stays" in refused.stderr and "CALLBACK_HOST_CONCURRENCY" in refused.stderr
    )

    shown = json.loads(run_ops(namespace, redis_url, "get", "--json").stdout)
    assert shown["version"] == 1 and shown["values"] == {"CALLBACK_RATE": "300"}
    secret = run_ops(namespace, redis_url, "set", f"CALLBACK_SIGNING_SECRET={NEW_SECRET}", "--json")
    assert json.loads(secret.stdout)["values"]["CALLBACK_SIGNING_SECRET"] == "<redacted>"
    assert NEW_SECRET not in secret.stdout + secret.stderr
    unset = json.loads(run_ops(namespace, redis_url, "unset", "CALLBACK_RATE", "--json").stdout)
    assert unset["version"] == 3 and "CALLBACK_RATE" not in unset["values"]


def test_a_new_signing_secret_is_used_by_the_leader(make_settings, namespace, redis_url):
    settings = make_settings()
    ConfigStore(redis.Redis.from_url(redis_url), settings_keys(settings)).change(
        settings, {"CALLBACK_SIGNING_SECRET": NEW_SECRET}
    )
    receiver = Receiver(NEW_SECRET).start()
    try:
        CallbackProducer(settings).enqueue(f"{receiver.url}/ok", {"x": 1})
        run_burst(settings)
        (arrival,) = receiver.snapshot()
        assert arrival.verified is True
        with pytest.raises(WebhookVerificationError):  # the old secret no longer verifies it
            Webhook(SECRET).verify(arrival.body, arrival.headers)
    finally:
        receiver.stop()


def test_a_running_worker_applies_a_new_rate_within_a_second(start_worker, make_settings, receiver, rclient, keys):
    slow = {"CALLBACK_RATE": "4", "CALLBACK_BATCH_SIZE": "100", "CALLBACK_MIN_INTERVAL": "0.5"}
    start_worker(**slow)
    settings = make_settings(**slow)
    CallbackProducer(settings).enqueue_many([(f"{receiver.url}/ok", {"n": n}) for n in range(60)])
    assert receiver.wait_for(3, timeout=30)  # the slow pace is in force

    ConfigStore(rclient, keys).change(settings, {"CALLBACK_RATE": "200"})

    assert receiver.wait_for(60, timeout=30)
    arrivals = sorted(a.at for a in receiver.snapshot())
    # At 4/s the last 40 would span ~10 s; at 200/s they span ~0.2 s (plus the second it may take to apply).
    assert arrivals[-1] - arrivals[-40] < 2.0


def test_image_tasks_use_new_stages_from_the_next_task_on(make_settings, tmp_path, redis_url, keys):
    settings = make_settings(MEDIA_ROOT=str(tmp_path))
    client = redis.Redis.from_url(redis_url)
    runner = TaskRunner(settings, client, None)
    image = base64.b64encode(jpeg((1000, 500))).decode()
    resized = runner.process({"task_id": "t-1", "image": image})
    ConfigStore(client, keys).change(settings, {"IMAGE_STAGES": "validate,format"})
    as_is = runner.process({"task_id": "t-2", "image": image})

    assert _size(resized) == (700, 350)
    assert _size(as_is) == (1000, 500)  # no resize stage any more
    assert wait_until(lambda: runner.runtime.version == 1, 1)


def settings_keys(settings):
    from worker.streams.keys import Keys

    return Keys(settings.namespace, settings.queue)


def _size(payload: dict) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(payload["image"]))).size
