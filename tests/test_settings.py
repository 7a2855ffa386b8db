"""Settings: every variable parses, malformed values fail clearly, cross-field rules hold, defaults derive.

Every environment passed here carries ``CALLBACK_SIGNING_SECRET``, so no
secret file is ever created under ``./var``.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import SECRET

from worker.config.settings import Settings, local_signing_secret
from worker.config.variables import VARIABLES
from worker.errors import SettingsError

BY_NAME = {var.name: var for var in VARIABLES}
OTHER_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
THIRD_SECRET = "whsec_" + base64.b64encode(b"t" * 24).decode()


def load(**env: str) -> Settings:
    return Settings.from_env({"CALLBACK_SIGNING_SECRET": SECRET, **env})


def failure(**env: str) -> str:
    with pytest.raises(SettingsError) as caught:
        load(**env)
    assert isinstance(caught.value, ValueError)  # callers that only know the standard library can catch it
    return str(caught.value)


def test_defaults_without_any_variable():
    settings = load()
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.namespace == "cbw"
    assert settings.queue == "default"
    assert settings.batch_size == 100
    assert settings.min_interval == 0.5
    assert settings.rate == 200.0
    assert settings.timeout == 10.0
    assert settings.connect_timeout == 3.0
    assert settings.claim_idle == 30.0
    assert settings.retry_schedule == (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)
    assert settings.max_attempts == 7
    assert settings.allow_private is False
    assert settings.metrics_port == 9191
    assert settings.signing_secret == SECRET
    assert settings.signing_secrets == ()
    assert settings.emission_interval == pytest.approx(1 / 200)


def test_non_callback_variables_are_ignored():
    settings = load(PATH="/usr/bin", HOME="/root", REDIS_HOST="x", CALLBACKS_FOO="1", CALLBACK="x")
    assert settings.batch_size == 100


# (variable, raw value, field, parsed value)
ED_KEY = "whsk_" + base64.b64encode(bytes(range(32))).decode()

VALID: list[tuple[str, str, str, Any]] = [
    ("REDIS_URL", "rediss://:pw@redis.example:6380/2", "redis_url", "rediss://:pw@redis.example:6380/2"),
    ("REDIS_URL", "redis://127.0.0.1:6379/0", "redis_url", "redis://127.0.0.1:6379/0"),
    ("REDIS_URL", "unix:///run/redis.sock", "redis_url", "unix:///run/redis.sock"),
    (
        "DRAMATIQ_BROKER_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2F",
        "broker_url",
        "amqp://guest:guest@127.0.0.1:5672/%2F",
    ),
    ("DRAMATIQ_BROKER_URL", "redis://127.0.0.1:6380/1", "broker_url", "redis://127.0.0.1:6380/1"),
    ("DATABASE_URL", "postgresql+psycopg2://u:p@db/cb", "database_url", "postgresql+psycopg2://u:p@db/cb"),
    ("DATABASE_URL", "sqlite:////tmp/cb.db", "database_url", "sqlite:////tmp/cb.db"),
    ("WORKER_NAMESPACE", "prod-eu.1_a", "namespace", "prod-eu.1_a"),
    ("CALLBACK_QUEUE", "priority", "queue", "priority"),
    ("CALLBACK_BATCH_SIZE", "250", "batch_size", 250),
    ("CALLBACK_BATCH_SIZE", " 250 ", "batch_size", 250),
    ("CALLBACK_BATCH_SIZE", "10000", "batch_size", 10_000),
    ("CALLBACK_MIN_INTERVAL", "0.25", "min_interval", 0.25),
    ("CALLBACK_MAX_DELAY", "2.5", "max_delay", 2.5),
    ("CALLBACK_MAX_DELAY", "0.01", "max_delay", 0.01),
    ("CALLBACK_RATE", "50", "rate", 50.0),
    ("CALLBACK_RATE", "0.5", "rate", 0.5),
    ("CALLBACK_HOST_CONCURRENCY", "3", "host_concurrency", 3),
    ("CALLBACK_SHARDS", "4", "shards", 4),
    ("CALLBACK_HOST_RATE", "25", "host_rate", 25.0),
    (
        "CALLBACK_HOST_RATES",
        '{"API.example.com:443": 5, "b:80": 0.5}',
        "host_rates",
        (("api.example.com:443", 5.0), ("b:80", 0.5)),
    ),
    ("CALLBACK_ADAPTIVE", "off", "adaptive", False),
    ("CALLBACK_MAX_AGE", "3600", "max_age", 3600.0),
    ("CALLBACK_CIRCUIT_PROBE", "2.5", "circuit_probe", 2.5),
    ("CALLBACK_AFTER_COMMIT", "0", "after_commit", False),
    ("CALLBACK_TIMEOUT", "20", "timeout", 20.0),
    ("CALLBACK_TIMEOUT", "300", "timeout", 300.0),
    ("CALLBACK_CONNECT_TIMEOUT", "1.5", "connect_timeout", 1.5),
    ("CALLBACK_CLAIM_IDLE", "60", "claim_idle", 60.0),
    ("CALLBACK_LEASE_TTL", "5", "lease_ttl", 5.0),
    ("CALLBACK_RETRY_SCHEDULE", "1, 2.5,10", "retry_schedule", (1.0, 2.5, 10.0)),
    ("CALLBACK_RETRY_SCHEDULE", "0", "retry_schedule", (0.0,)),
    ("CALLBACK_MAX_ATTEMPTS", "3", "max_attempts", 3),
    ("CALLBACK_MAX_DELIVERIES", "9", "max_deliveries", 9),
    ("CALLBACK_RETRY_AFTER_MAX", "0", "retry_after_max", 0.0),
    ("CALLBACK_SIGNING_SECRET", OTHER_SECRET, "signing_secret", OTHER_SECRET),
    ("CALLBACK_SIGNING_KEY", ED_KEY, "ed25519_key", ED_KEY),
    (
        "CALLBACK_SIGNING_SECRETS",
        json.dumps({"https://a.example/": OTHER_SECRET}),
        "signing_secrets",
        (("https://a.example/", OTHER_SECRET),),
    ),
    ("CALLBACK_SIGNING_SECRETS", "{}", "signing_secrets", ()),
    ("CALLBACK_ALLOW_PRIVATE", "1", "allow_private", True),
    ("CALLBACK_ALLOW_PRIVATE", "true", "allow_private", True),
    ("CALLBACK_ALLOW_PRIVATE", "YES", "allow_private", True),
    ("CALLBACK_ALLOW_PRIVATE", "On", "allow_private", True),
    ("CALLBACK_ALLOW_PRIVATE", "0", "allow_private", False),
    ("CALLBACK_ALLOW_PRIVATE", "False", "allow_private", False),
    ("CALLBACK_ALLOW_PRIVATE", "no", "allow_private", False),
    ("CALLBACK_ALLOW_PRIVATE", "off", "allow_private", False),
    ("CALLBACK_MAX_PAYLOAD_BYTES", "2048", "max_payload_bytes", 2048),
    ("CALLBACK_MAX_RESPONSE_BYTES", "0", "max_response_bytes", 0),
    ("METRICS_PORT", "0", "metrics_port", 0),
    ("METRICS_PORT", "65535", "metrics_port", 65535),
    ("CALLBACK_IMMEDIATE", "yes", "immediate", True),
    ("CALLBACK_STATUS_FLUSH_INTERVAL", "0.25", "status_flush_interval", 0.25),
    ("CALLBACK_STATUS_FLUSH_SIZE", "2000", "status_flush_size", 2000),
    ("IMAGE_STAGES", "validate, model ,resize,format", "image_stages", ("validate", "model", "resize", "format")),
    ("IMAGE_SHORT_SIDE", "512", "image_short_side", 512),
    ("IMAGE_MAX_PIXELS", "24000000", "image_max_pixels", 24_000_000),
    ("IMAGE_MAX_BYTES", "1048576", "image_max_bytes", 1_048_576),
    ("IMAGE_FORMATS", "jpg, png,gif,JPEG", "image_formats", ("JPEG", "PNG", "GIF")),
    ("IMAGE_JPEG_QUALITY", "82", "image_jpeg_quality", 82),
    (
        "IMAGE_MODEL_URL",
        "http://models.internal:8000/remove-bg",
        "image_model_url",
        "http://models.internal:8000/remove-bg",
    ),
    ("IMAGE_MODEL_URL_PREFIXES", "http://10.0.0.5:9000/", "image_model_url_prefixes", ("http://10.0.0.5:9000/",)),
    ("IMAGE_MODEL_TIMEOUT", "2.5", "image_model_timeout", 2.5),
    ("IMAGE_MODEL_RETRIES", "0", "image_model_retries", 0),
    ("IMAGE_MODEL_BACKOFF", "0", "image_model_backoff", 0.0),
    ("MEDIA_ROOT", "/srv/media", "media_root", Path("/srv/media")),
]


@pytest.mark.parametrize(("name", "raw", "attr", "expected"), VALID, ids=[f"{v[0]}={v[1]!r}" for v in VALID])
def test_every_variable_parses(name, raw, attr, expected):
    value = getattr(load(**{name: raw}), attr)
    assert value == expected
    assert type(value) is type(expected)


def test_the_valid_table_covers_every_variable():
    assert {row[0] for row in VALID} == set(BY_NAME)


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_value_means_the_default(blank):
    settings = load(CALLBACK_BATCH_SIZE=blank, CALLBACK_TIMEOUT=blank, METRICS_PORT=blank)
    assert (settings.batch_size, settings.timeout, settings.metrics_port) == (100, 10.0, 9191)


# (variable, malformed value, what the message says is wrong)
MALFORMED: list[tuple[str, str, str]] = [
    ("REDIS_URL", "http://127.0.0.1:6379", "scheme must be redis://, rediss:// or unix://"),
    ("REDIS_URL", "127.0.0.1:6379", "scheme must be"),
    ("DRAMATIQ_BROKER_URL", "http://127.0.0.1:5672/", "scheme must be amqp:// or amqps://"),
    ("DATABASE_URL", "mysql://db/cb", "only sqlite:/// and postgresql+psycopg2:// URLs are supported"),
    ("WORKER_NAMESPACE", "a:b", "no ':' or braces"),
    ("WORKER_NAMESPACE", "{cbw}", "no ':' or braces"),
    ("WORKER_NAMESPACE", "x" * 65, "1-64 letters"),
    ("WORKER_NAMESPACE", "a b", "1-64 letters"),
    ("CALLBACK_QUEUE", "q{1}", "no ':' or braces"),
    ("CALLBACK_BATCH_SIZE", "0", "must be >= 1"),
    ("CALLBACK_BATCH_SIZE", "10001", "must be <= 10000"),
    ("CALLBACK_BATCH_SIZE", "1.5", "invalid literal for int()"),
    ("CALLBACK_BATCH_SIZE", "ten", "invalid literal for int()"),
    ("CALLBACK_MIN_INTERVAL", "0", "must be > 0"),
    ("CALLBACK_MIN_INTERVAL", "-1", "must be > 0"),
    ("CALLBACK_MIN_INTERVAL", "inf", "not a finite number"),
    ("CALLBACK_MAX_DELAY", "0.001", "must be >= 0.01"),
    ("CALLBACK_MAX_DELAY", "61", "must be <= 60"),
    ("CALLBACK_RATE", "0", "must be > 0"),
    ("CALLBACK_RATE", "nan", "not a finite number"),
    ("CALLBACK_RATE", "fast", "could not convert string to float"),
    ("CALLBACK_HOST_CONCURRENCY", "0", "must be >= 1"),
    ("CALLBACK_SHARDS", "257", "must be <= 256"),
    ("CALLBACK_HOST_RATES", '{"no-port": 5}', "is not host:port"),
    ("CALLBACK_HOST_RATES", '{"a:443": -1}', "must be a number of deliveries per second"),
    ("CALLBACK_HOST_RATES", "[1]", "must be a JSON object"),
    ("CALLBACK_MAX_AGE", "10", "must be >= 60"),
    ("CALLBACK_TIMEOUT", "0", "must be > 0"),
    ("CALLBACK_TIMEOUT", "301", "must be <= 300"),
    ("CALLBACK_TIMEOUT", "10s", "could not convert string to float"),
    ("CALLBACK_CONNECT_TIMEOUT", "0", "must be > 0"),
    ("CALLBACK_CLAIM_IDLE", "0.5", "must be >= 1"),
    ("CALLBACK_LEASE_TTL", "0.5", "must be >= 1"),
    ("CALLBACK_LEASE_TTL", "601", "must be <= 600"),
    ("CALLBACK_RETRY_SCHEDULE", "5,,30", "could not convert string to float"),
    ("CALLBACK_RETRY_SCHEDULE", "5,-1", "must be >= 0"),
    ("CALLBACK_RETRY_SCHEDULE", "5,nan", "not a finite number"),
    ("CALLBACK_RETRY_SCHEDULE", "5 30", "could not convert string to float"),
    ("CALLBACK_MAX_ATTEMPTS", "0", "must be >= 1"),
    ("CALLBACK_MAX_ATTEMPTS", "101", "must be <= 100"),
    ("CALLBACK_MAX_DELIVERIES", "1", "must be >= 2"),
    ("CALLBACK_RETRY_AFTER_MAX", "-1", "must be >= 0"),
    ("CALLBACK_ALLOW_PRIVATE", "maybe", "not a boolean"),
    ("CALLBACK_ALLOW_PRIVATE", "2", "not a boolean"),
    ("CALLBACK_MAX_PAYLOAD_BYTES", "0", "must be >= 1"),
    ("CALLBACK_MAX_PAYLOAD_BYTES", str(64 * 1024 * 1024 + 1), "must be <="),
    ("CALLBACK_MAX_RESPONSE_BYTES", "-1", "must be >= 0"),
    ("METRICS_PORT", "65536", "must be <= 65535"),
    ("METRICS_PORT", "-1", "must be >= 0"),
    ("METRICS_PORT", "http", "invalid literal for int()"),
]


@pytest.mark.parametrize(("name", "raw", "why"), MALFORMED, ids=[f"{m[0]}={m[1][:20]!r}" for m in MALFORMED])
def test_a_malformed_value_names_the_variable_the_value_the_reason_and_what_is_allowed(name, raw, why):
    message = failure(**{name: raw})
    assert message.startswith(f"{name}={raw!r} is invalid: ")
    assert why in message
    assert f"Allowed: {BY_NAME[name].allowed}." in message


# Secret values that must never be echoed: (variable, raw value, a fragment of it to look for).
BAD_SECRETS: list[tuple[str, str, str]] = [
    ("CALLBACK_SIGNING_SECRET", "garbage", "garbage"),
    ("CALLBACK_SIGNING_KEY", "whsk_notbase64!!", "notbase64"),
    ("CALLBACK_SIGNING_SECRET", "whsec_!!notbase64!!", "notbase64"),
    ("CALLBACK_SIGNING_SECRET", "whsec_" + base64.b64encode(b"short-key").decode(), "c2hvcnQta2V5"),
    ("CALLBACK_SIGNING_SECRET", SECRET[len("whsec_") :], SECRET[len("whsec_") :]),
    ("CALLBACK_SIGNING_SECRET", SECRET + "x", SECRET),
    ("CALLBACK_SIGNING_SECRETS", "{not json " + SECRET, SECRET),
    ("CALLBACK_SIGNING_SECRETS", json.dumps({"https://a.example/": "garbage-secret"}), "garbage-secret"),
    ("CALLBACK_SIGNING_SECRETS", json.dumps({"https://a.example/": SECRET + "x"}), SECRET),
    ("CALLBACK_SIGNING_SECRETS", json.dumps([SECRET]), SECRET),
    # Keys and values swapped: the secret sits where a URL prefix belongs.
    ("CALLBACK_SIGNING_SECRETS", json.dumps({SECRET: "https://a.example/"}), SECRET),
]


@pytest.mark.parametrize(
    ("name", "raw", "fragment"), BAD_SECRETS, ids=[f"{b[0]}-{n}" for n, b in enumerate(BAD_SECRETS)]
)
def test_secrets_never_appear_in_error_messages(name, raw, fragment):
    env = {"CALLBACK_SIGNING_SECRET": SECRET, name: raw}
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    message = str(caught.value)
    assert message.startswith(f"{name}='<redacted>' is invalid: ")
    assert f"Allowed: {BY_NAME[name].allowed}." in message
    # Nor anywhere in the chain a traceback would print.
    error: BaseException | None = caught.value
    while error is not None:
        assert fragment not in str(error)
        assert raw not in str(error)
        error = error.__cause__ or error.__context__


def test_the_secret_is_not_in_the_repr_of_the_settings():
    settings = load(CALLBACK_SIGNING_SECRETS=json.dumps({"https://a.example/": OTHER_SECRET}))
    assert SECRET not in repr(settings)
    assert OTHER_SECRET not in repr(settings)


# (misspelt variable, the suggestion)
TYPOS = [
    ("CALLBACK_BATCHSIZE", "CALLBACK_BATCH_SIZE"),
    ("CALLBACK_TIMOUT", "CALLBACK_TIMEOUT"),
    ("CALLBACK_RATES", "CALLBACK_RATE"),
    ("CALLBACK_SIGNING_SECRT", "CALLBACK_SIGNING_SECRET"),
    ("CALLBACK_ALLOW_PRIVATES", "CALLBACK_ALLOW_PRIVATE"),
    ("CALLBACK_CLAIM_IDEL", "CALLBACK_CLAIM_IDLE"),
    ("CALLBACK_RETRY_SCHEDUAL", "CALLBACK_RETRY_SCHEDULE"),
]


@pytest.mark.parametrize(("name", "suggestion"), TYPOS)
def test_an_unknown_callback_variable_fails_with_a_suggestion(name, suggestion):
    message = failure(**{name: OTHER_SECRET})
    assert message.startswith(f"unknown setting {name}. Did you mean {suggestion}?")
    assert OTHER_SECRET not in message  # the value of an unknown variable may be a secret too
    assert "CALLBACK_BATCH_SIZE" in message  # the known names are listed


def test_an_unknown_variable_with_no_close_match_still_fails_without_a_suggestion():
    message = failure(CALLBACK_ZZZZZZZZZZZZZZZZZZZZZZZZ="1")
    assert "unknown setting CALLBACK_ZZZZZZZZZZZZZZZZZZZZZZZZ." in message
    assert "Did you mean" not in message


# Cross-field rules: (environment, accepted?, fragments of the message when refused)
CROSS_FIELD: list[tuple[dict[str, str], bool, tuple[str, ...]]] = [
    ({"CALLBACK_TIMEOUT": "10", "CALLBACK_CLAIM_IDLE": "15"}, True, ()),
    (
        {"CALLBACK_TIMEOUT": "10", "CALLBACK_CLAIM_IDLE": "14.9"},
        False,
        ("CALLBACK_CLAIM_IDLE=14.9", "CALLBACK_TIMEOUT (10) + 5", "CALLBACK_CLAIM_IDLE=15 or more"),
    ),
    ({"CALLBACK_TIMEOUT": "60", "CALLBACK_CLAIM_IDLE": "30"}, False, ("CALLBACK_CLAIM_IDLE=30", "=65 or more")),
    ({"CALLBACK_BATCH_SIZE": "10", "CALLBACK_MIN_INTERVAL": "0.5", "CALLBACK_RATE": "20"}, True, ()),
    (
        {"CALLBACK_BATCH_SIZE": "10", "CALLBACK_MIN_INTERVAL": "0.5", "CALLBACK_RATE": "20.5"},
        False,
        ("CALLBACK_RATE=20.5/s", "CALLBACK_BATCH_SIZE / CALLBACK_MIN_INTERVAL", "10 / 0.5 s = 20/s"),
    ),
    ({"CALLBACK_RATE": "201"}, False, ("CALLBACK_RATE=201/s", "100 / 0.5 s = 200/s")),
    ({"CALLBACK_TIMEOUT": "4", "CALLBACK_CONNECT_TIMEOUT": "4"}, True, ()),
    (
        {"CALLBACK_TIMEOUT": "4", "CALLBACK_CONNECT_TIMEOUT": "5"},
        False,
        ("CALLBACK_CONNECT_TIMEOUT=5 must not exceed CALLBACK_TIMEOUT=4",),
    ),
]


@pytest.mark.parametrize(("env", "accepted", "fragments"), CROSS_FIELD)
def test_cross_field_rules(env, accepted, fragments):
    if accepted:
        load(**env)
        return
    message = failure(**env)
    for fragment in fragments:
        assert fragment in message


def test_with_overrides_applies_the_cross_field_rules_too():
    settings = load()
    assert settings.with_overrides(batch_size=250).batch_size == 250
    with pytest.raises(SettingsError, match="CALLBACK_CLAIM_IDLE"):
        settings.with_overrides(claim_idle=12.0)
    with pytest.raises(SettingsError, match="CALLBACK_RATE"):
        settings.with_overrides(rate=1e6)


# Derived defaults: (environment, field, value)
DERIVED: list[tuple[dict[str, str], str, Any]] = [
    ({}, "rate", 200.0),
    ({"CALLBACK_BATCH_SIZE": "500", "CALLBACK_MIN_INTERVAL": "0.05"}, "rate", 10_000.0),
    ({"CALLBACK_MIN_INTERVAL": "2"}, "rate", 50.0),
    ({"CALLBACK_BATCH_SIZE": "500", "CALLBACK_RATE": "30"}, "rate", 30.0),
    ({"CALLBACK_RETRY_SCHEDULE": "1,2"}, "max_attempts", 3),
    ({"CALLBACK_RETRY_SCHEDULE": "7"}, "max_attempts", 2),
    ({"CALLBACK_RETRY_SCHEDULE": "1,2", "CALLBACK_MAX_ATTEMPTS": "10"}, "max_attempts", 10),
    ({"CALLBACK_MAX_ATTEMPTS": "4"}, "max_attempts", 4),
    ({"CALLBACK_TIMEOUT": "1"}, "connect_timeout", 1.0),
    ({"CALLBACK_TIMEOUT": "2.5"}, "connect_timeout", 2.5),
    ({"CALLBACK_TIMEOUT": "20"}, "connect_timeout", 3.0),
    ({"CALLBACK_TIMEOUT": "20", "CALLBACK_CONNECT_TIMEOUT": "8"}, "connect_timeout", 8.0),
    ({"CALLBACK_TIMEOUT": "1"}, "claim_idle", 30.0),
    ({"CALLBACK_TIMEOUT": "12.5"}, "claim_idle", 30.0),
    ({"CALLBACK_TIMEOUT": "20"}, "claim_idle", 45.0),
    ({"CALLBACK_TIMEOUT": "300"}, "claim_idle", 605.0),
    ({"CALLBACK_TIMEOUT": "20", "CALLBACK_CLAIM_IDLE": "25"}, "claim_idle", 25.0),
]


@pytest.mark.parametrize(("env", "attr", "expected"), DERIVED)
def test_derived_defaults(env, attr, expected):
    settings = load(**env)
    assert getattr(settings, attr) == pytest.approx(expected)
    settings.check()  # a derived default always satisfies the cross-field rules


def test_signing_secrets_by_prefix_are_kept_longest_prefix_first():
    mapping = {
        "https://a.example/": OTHER_SECRET,
        "https://a.example/hooks/special/": THIRD_SECRET,
        "http://b.example/hooks/": SECRET,
    }
    settings = load(CALLBACK_SIGNING_SECRETS=json.dumps(mapping))
    assert settings.signing_secrets == (
        ("https://a.example/hooks/special/", THIRD_SECRET),
        ("http://b.example/hooks/", SECRET),
        ("https://a.example/", OTHER_SECRET),
    )


# Malformed CALLBACK_SIGNING_SECRETS: (raw JSON, what the message says)
BAD_PREFIX_MAPS: list[tuple[str, str]] = [
    ("{nope", "not JSON"),
    ('["https://a.example/"]', "must be a JSON object"),
    (json.dumps({"ftp://a.example/": OTHER_SECRET}), "prefix 'ftp://a.example/' must start with http:// or https://"),
    (json.dumps({"a.example/": OTHER_SECRET}), "prefix 'a.example/' must start with http:// or https://"),
    (json.dumps({SECRET: "https://a.example/"}), "prefix <redacted> must start with http:// or https://"),
    (json.dumps({"https://a.example/": 5}), "secret for 'https://a.example/' must be a string"),
    (json.dumps({"https://a.example/": "sk_live"}), "secret for 'https://a.example/': must start with 'whsec_'"),
]


@pytest.mark.parametrize(("raw", "why"), BAD_PREFIX_MAPS)
def test_malformed_signing_secrets_by_prefix(raw, why):
    message = failure(CALLBACK_SIGNING_SECRETS=raw)
    assert why in message


def test_the_local_signing_secret_is_created_once_private_and_reused(tmp_path):
    path = tmp_path / "var" / "signing_secret"
    first = local_signing_secret(path)
    assert first.startswith("whsec_")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert local_signing_secret(path) == first
    # The generated secret is one the settings accept.
    assert load(CALLBACK_SIGNING_SECRET=first).signing_secret == first


def test_only_a_signing_process_creates_the_local_secret_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    producer = Settings.from_env({}, signs=False)
    assert producer.signing_secret == ""
    assert not (tmp_path / "var").exists()  # a producer or an operator command leaves no file behind

    worker = Settings.from_env({})
    secret_file = tmp_path / "var" / "signing_secret"
    assert worker.signing_secret.startswith("whsec_")
    assert secret_file.read_text().strip() == worker.signing_secret
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert Settings.from_env({}).signing_secret == worker.signing_secret  # created once, then reused


CREDENTIALED = [
    {"DATABASE_URL": "mysql://app:PASSWORD@db/cb"},
    {"DATABASE_URL": "postgresql+psycopg2://app:PASSWORD@db/cb", "CALLBACK_RATE": "abc"},
    {"REDIS_URL": "http://:PASSWORD@127.0.0.1:6379/0"},
    {"REDIS_URL": "redis://:PASSWORD@127.0.0.1:6379/0", "CALLBACK_TIMEOUT": "-1"},
    {"IMAGE_MODEL_URL": "ftp://model.example/run?code=PASSWORD"},
]


@pytest.mark.parametrize("env", CREDENTIALED)
def test_a_configuration_error_never_shows_a_password(env):
    message = failure(**env)
    assert "PASSWORD" not in message
