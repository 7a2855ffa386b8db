"""Run-time configuration in Redis: validated, versioned, applied by running processes without a restart."""

from __future__ import annotations

import base64
import io
import json
import logging
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
from worker.config.runtime import ConfigStore, RuntimeConfig, RuntimeFollower, Unreadable, apply, parse
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


# -- a corrupt key (issue 9, defect 4): a reason, never an exception; processes keep what is in force -------

CORRUPT = [
    b"not json",
    b"[1, 2]",
    b'"a string"',
    b"7",
    b"null",
    b"{}",
    b'{"version": "x", "values": {}}',
    b'{"version": -1, "values": {}}',
    b'{"version": true, "values": {}}',
    b'{"version": 1e400, "values": {}}',
    b'{"version": 3}',
    b'{"version": 3, "values": []}',
    b'{"version": 3, "values": {"NOPE": "1"}}',
    b'{"version": 3, "values": {"REDIS_URL": "redis://elsewhere/0"}}',
    b'{"version": 3, "values": {"CALLBACK_RATE": null}}',
    b'{"version": 3, "values": {"CALLBACK_RATE": ["1"]}}',
    b'{"version": 3, "values": {"CALLBACK_RATE": "\\ud800"}}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"version": 1, "values": {"CALLBACK_RATE": "\xff\xfe"}}',
    "{}".encode("utf-16"),
    b"\xef\xbb\xbf{}",
    b'{"version": 1' + b"0" * 5000 + b', "values": {}}',
    b'{"version": 1, "values": {}, "pad": "' + b"x" * 70_000 + b'"}',
]


@pytest.fixture
def ops_cli(namespace, redis_url, monkeypatch, capsys):
    """``ops_cli(*argv)`` -> (exit code, stdout, stderr) of ``python -m ops`` run in-process on this namespace."""
    from ops.__main__ import main

    def run(*argv: str) -> tuple[int, str, str]:
        for name, value in settings_env(namespace, redis_url).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = main(list(argv))
        return (code, *capsys.readouterr())

    return run


@pytest.mark.parametrize("raw", CORRUPT, ids=lambda raw: repr(raw[:30]))
def test_a_corrupt_key_parses_to_a_reason(raw):
    found = parse(raw)
    assert isinstance(found, Unreadable) and found.reason
    assert found.problem("k").isprintable() and len(found.problem("k")) < 600


@pytest.mark.parametrize("raw", CORRUPT[:4] + CORRUPT[12:13] + CORRUPT[17:19], ids=lambda raw: repr(raw[:30]))
def test_ops_config_get_on_a_corrupt_key_says_what_is_wrong_and_how_to_repair_it(
    ops_cli, redis_url, rclient, keys, raw
):
    rclient.set(keys.config, raw)
    code, out, err = ops_cli("config", "get")
    assert code == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert "cannot be read" in err and "ops config set" in err and f"DEL '{keys.config}'" in err

    code, out, err = ops_cli("config", "unset", "CALLBACK_RATE")
    assert code == 1 and "nothing to unset" in err and rclient.exists(keys.config)

    code, out, err = ops_cli("config", "set", "CALLBACK_RATE=300")
    assert code == 0 and "CALLBACK_RATE=300" in out  # the tool repairs what it cannot read
    assert parse(redis.Redis.from_url(redis_url).get(keys.config)).values == {"CALLBACK_RATE": "300"}


def test_a_config_key_of_the_wrong_type_is_repaired_by_set(ops_cli, rclient, keys):
    rclient.hset(keys.config, "version", "1")
    code, _, err = ops_cli("config", "get")
    assert code == 1 and "holds a Redis hash" in err
    code, _, _ = ops_cli("config", "set", "CALLBACK_RATE=300")
    assert code == 0 and rclient.type(keys.config) == "string"


@pytest.mark.parametrize("name", ["NOPE", "CALLBACK_BATCH_SIZE", "REDIS_URL"])
def test_unset_of_a_name_not_set_is_refused_and_keeps_the_version(ops_cli, rclient, keys, name):
    assert ops_cli("config", "set", "CALLBACK_RATE=300")[0] == 0
    code, out, err = ops_cli("config", "unset", name)
    assert code == 1 and out == "" and err.count("\n") == 1 and f"{name} is not" in err
    assert parse(rclient.get(keys.config)) == RuntimeConfig(1, {"CALLBACK_RATE": "300"})
    assert ops_cli("config", "unset")[0] == 1  # nothing to unset


@pytest.mark.parametrize(
    "argv",
    [
        ["set", f"CALLBACK_SIGNING_SECRET={NEW_SECRET[:-8]}"],  # too short
        ["set", f"CALLBACK_SIGNING_SECRET=x{NEW_SECRET}"],
        ["set", NEW_SECRET],  # the name forgotten
        ["set", f" {NEW_SECRET}"],
        ["set", f"CALLBACK_SIGNING_SECRETS={json.dumps({'https://a.example/': NEW_SECRET[:-8]})}"],
        ["set", f"CALLBACK_SIGNING_SECRETS={json.dumps({NEW_SECRET: 'https://a.example/'})}"],  # swapped
        ["set", f"CALLBACK_SIGNING_SECRET={NEW_SECRET}", "CALLBACK_RATE=fast"],
        ["set", f"CALLBACK_SIGNING_SECRET={NEW_SECRET}"],  # accepted: shown redacted
        ["unset", f"CALLBACK_SIGNING_SECRET={NEW_SECRET}"],
        ["get", "--json"],
    ],
)
def test_ops_config_never_echoes_a_secret(ops_cli, argv):
    code, out, err = ops_cli("config", *argv)
    secret = NEW_SECRET.removeprefix("whsec_")[:-8]
    assert secret not in out + err and "Traceback" not in err
    assert code == 0 or err.count("\n") == 1


@pytest.mark.parametrize("decoding", [False, True], ids=["bytes client", "decoding client"])
def test_the_follower_keeps_the_settings_in_force_and_logs_a_corrupt_key_once(
    make_settings, redis_url, keys, caplog, decoding
):
    settings = make_settings()
    rclient = redis.Redis.from_url(redis_url, decode_responses=decoding)
    ConfigStore(rclient, keys).change(settings, {"CALLBACK_RATE": "300"})
    follower = RuntimeFollower(settings, keys)
    in_force = follower.poll(rclient)
    assert in_force is not None and in_force.rate == 300 and follower.version == 1

    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="worker.config.runtime"):
        for raw in CORRUPT:
            rclient.set(keys.config, raw)
            assert follower.poll(rclient) is None and follower.poll(rclient) is None
        rclient.delete(keys.config)
        rclient.hset(keys.config, "a", "b")  # WRONGTYPE
        assert follower.poll(rclient) is None and follower.poll(rclient) is None
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == len(CORRUPT) + 1  # once per stored value, not once per look
    assert all("cannot be read" in message and "version 1 stays" in message for message in errors)
    assert follower.version == 1

    rclient.delete(keys.config)  # repaired: the environment's settings again
    back = follower.poll(rclient)
    assert back is not None and back.rate == settings.rate


@pytest.mark.parametrize("raw", [b"not json", b'{"version": 9, "values": {"NOPE": "1"}}', b"[" * 5000])
def test_the_leader_delivers_with_a_corrupt_config_key(make_settings, receiver, rclient, keys, raw):
    settings = make_settings()
    rclient.set(keys.config, raw)
    ids = CallbackProducer(settings).enqueue_many([(f"{receiver.url}/ok", {"n": n}) for n in range(3)])
    run_burst(settings)
    assert sorted(receiver.ids()) == sorted(ids)
    assert rclient.strlen(keys.config) == len(raw)  # left as it was: the operator repairs it


def test_image_tasks_run_with_a_corrupt_config_key(make_settings, tmp_path, redis_url, rclient, keys):
    runner = TaskRunner(make_settings(MEDIA_ROOT=str(tmp_path)), redis.Redis.from_url(redis_url), None)
    image = base64.b64encode(jpeg((400, 200))).decode()
    for n, raw in enumerate(CORRUPT[:6]):
        rclient.set(keys.config, raw)
        assert runner.process({"task_id": f"t-{n}", "image": image})["status"] == "success"
    assert runner.runtime.version == 0
