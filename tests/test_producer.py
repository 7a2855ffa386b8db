"""The producer against real Redis: ids, one round trip per batch, and all-or-nothing validation."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import redis
from conftest import free_port, settings_env

import worker
from worker.errors import (
    EnqueueFailed,
    InvalidCallback,
    InvalidCallbackURL,
    InvalidPayload,
    PayloadTooLarge,
    WorkerError,
)
from worker.producer import CallbackProducer, CallbackRequest
from worker.streams.keys import Keys

ID = re.compile(r"msg_[0-9a-f]{32}")
URL = "https://hooks.example/cb"


class CountingConnection(redis.Connection):
    """A real connection that counts how many times it writes to the socket (one write = one round trip)."""

    writes = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        super().send_packed_command(command, check_health)


@pytest.fixture
def producer(make_settings):
    made: list[CallbackProducer] = []

    def make(**overrides: Any) -> CallbackProducer:
        made.append(CallbackProducer(make_settings(**overrides)))
        return made[-1]

    yield make
    for each in made:
        each.close()


def stream(rclient, namespace: str) -> list[dict[str, str]]:
    return [fields for _, fields in rclient.xrange(Keys(namespace).stream)]


def test_enqueue_returns_a_msg_id_and_adds_one_entry(producer, rclient, namespace):
    callback_id = producer().enqueue(URL, {"task_id": "t1", "status": "success"}, task_id="t1")
    assert ID.fullmatch(callback_id)
    [fields] = stream(rclient, namespace)
    assert fields["cid"] == callback_id
    assert fields["url"] == URL
    assert json.loads(fields["body"]) == {"task_id": "t1", "status": "success"}
    assert fields["body"] == '{"task_id":"t1","status":"success"}'  # compact JSON: it is what gets signed
    assert fields["task"] == "t1"
    assert fields["att"] == "0"
    assert fields["t0"] == fields["tq"]


def test_every_callback_gets_its_own_id(producer):
    made = producer()
    ids = [made.enqueue(URL, {"n": n}) for n in range(20)]
    assert len(set(ids)) == 20
    assert all(ID.fullmatch(callback_id) for callback_id in ids)


def test_a_batch_of_1000_is_one_round_trip_and_all_of_it_is_in_the_stream(make_settings, redis_url, rclient, namespace):
    client = redis.Redis.from_url(redis_url, connection_class=CountingConnection)
    made = CallbackProducer(make_settings(), client)
    try:
        client.ping()  # connect (and say hello) before counting
        before = CountingConnection.writes
        ids = made.enqueue_many([(f"{URL}/{n}", {"n": n}, f"task-{n}") for n in range(1000)])
        assert CountingConnection.writes - before == 1
    finally:
        made.close()
    assert len(ids) == len(set(ids)) == 1000
    assert rclient.xlen(Keys(namespace).stream) == 1000
    fields = stream(rclient, namespace)
    assert [f["cid"] for f in fields] == ids  # in order
    assert [f["task"] for f in fields] == [f"task-{n}" for n in range(1000)]
    assert [json.loads(f["body"]) for f in fields] == [{"n": n} for n in range(1000)]


def test_mapping_tuple_and_request_forms_are_accepted(producer, rclient, namespace):
    ids = producer().enqueue_many(
        [
            (URL, {"form": "pair"}),
            (URL, {"form": "triple"}, "t-3"),
            {"url": URL, "payload": {"form": "mapping"}},
            {"url": URL, "payload": {"form": "mapping+task"}, "task_id": "t-m"},
            CallbackRequest(URL, {"form": "request"}, "t-r"),
            (URL, None),  # null is valid JSON
        ]
    )
    assert len(ids) == 6
    fields = stream(rclient, namespace)
    assert [f["body"] for f in fields] == [
        '{"form":"pair"}',
        '{"form":"triple"}',
        '{"form":"mapping"}',
        '{"form":"mapping+task"}',
        '{"form":"request"}',
        "null",
    ]
    assert [f.get("task") for f in fields] == [None, "t-3", None, "t-m", "t-r", None]


def test_an_empty_batch_enqueues_nothing(producer, rclient, namespace):
    assert producer().enqueue_many([]) == []
    assert rclient.exists(Keys(namespace).stream) == 0


class Unserialisable:
    pass


NESTED: list[Any] = []
_inner = NESTED
for _ in range(100_000):  # deeper than the interpreter's recursion limit
    _inner.append([])
    _inner = _inner[0]

# (url, payload, task_id, error class, what the message says)
BAD: list[tuple[Any, Any, Any, type[InvalidCallback], str]] = [
    ("ftp://hooks.example/cb", {}, None, InvalidCallbackURL, "must start with http:// or https://"),
    ("hooks.example/cb", {}, None, InvalidCallbackURL, "must start with http:// or https://"),
    ("https://user:pw@hooks.example/", {}, None, InvalidCallbackURL, "must not carry credentials"),
    ("https://hooks.example/a b", {}, None, InvalidCallbackURL, "whitespace or control characters"),
    ("https:///cb", {}, None, InvalidCallbackURL, "has no host"),
    (42, {}, None, InvalidCallbackURL, "must be a string, got int"),
    ("https://hooks.example/\udcff", {}, None, InvalidCallbackURL, "lone surrogate"),
    ("http://169.254.169.254/latest/", {}, None, InvalidCallbackURL, "cloud metadata"),
    (URL, {"tags": {"a", "b"}}, None, InvalidPayload, "Object of type set is not JSON serializable"),
    (URL, {"value": float("nan")}, None, InvalidPayload, "Out of range float values are not JSON compliant"),
    (URL, [float("inf")], None, InvalidPayload, "Out of range float values"),
    (URL, {"obj": Unserialisable()}, None, InvalidPayload, "Object of type Unserialisable is not JSON serializable"),
    (URL, b"raw bytes", None, InvalidPayload, "Object of type bytes"),
    (URL, {(1, 2): "tuple key"}, None, InvalidPayload, "keys must be str"),
    (URL, {"path": "image-\udcff.png"}, None, InvalidPayload, "lone surrogate"),
    (URL, {}, 17, InvalidCallback, "task_id must be a string or None, got int"),
    (URL, {}, b"t1", InvalidCallback, "task_id must be a string or None, got bytes"),
    (URL, {}, "t\udcff", InvalidCallback, "task_id must be 1-200 printable characters"),
    (URL, {}, "t\x00", InvalidCallback, "task_id must be 1-200 printable characters"),
    (URL, {}, "t\u200b", InvalidCallback, "task_id must be 1-200 printable characters"),
    (URL, {}, "", InvalidCallback, "task_id must be 1-200 printable characters"),
    (URL, {}, "t" * 201, InvalidCallback, "task_id must be 1-200 printable characters"),
    (URL, NESTED, None, InvalidPayload, "nests too deeply"),
]


@pytest.mark.parametrize("case", BAD, ids=[f"{row[3].__name__}-{n}" for n, row in enumerate(BAD)])
def test_bad_input_raises_a_specific_value_error_and_enqueues_nothing(producer, rclient, namespace, case):
    url, payload, task_id, error, why = case
    with pytest.raises(error) as caught:
        producer(CALLBACK_ALLOW_PRIVATE="0").enqueue(url, payload, task_id=task_id)
    assert type(caught.value) is error
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, WorkerError)
    assert why in str(caught.value)
    assert rclient.xlen(Keys(namespace).stream) == 0


# (payload, bytes of its compact JSON) against CALLBACK_MAX_PAYLOAD_BYTES=100
SIZES: list[tuple[Any, int]] = [
    ({"x": "a" * 92}, 100),
    ({"x": "\u00e9" * 46}, 100),  # two bytes each in UTF-8
]


@pytest.mark.parametrize(("payload", "size"), SIZES)
def test_a_payload_at_the_limit_is_accepted(producer, rclient, namespace, payload, size):
    assert len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()) == size
    producer(CALLBACK_MAX_PAYLOAD_BYTES=100).enqueue(URL, payload)
    assert rclient.xlen(Keys(namespace).stream) == 1


@pytest.mark.parametrize(
    ("payload", "size"),
    [({"x": "a" * 93}, 101), ({"x": "\u00e9" * 47}, 102), ({"x": "a" * 10_000}, 10_008)],
)
def test_an_oversized_payload_is_refused_in_bytes_not_characters(producer, rclient, namespace, payload, size):
    with pytest.raises(PayloadTooLarge) as caught:
        producer(CALLBACK_MAX_PAYLOAD_BYTES=100).enqueue(URL, payload)
    message = str(caught.value)
    assert f"payload is {size} bytes as JSON; the limit is 100 (CALLBACK_MAX_PAYLOAD_BYTES)" in message
    assert isinstance(caught.value, ValueError)
    assert rclient.xlen(Keys(namespace).stream) == 0


# A batch with one bad item in the middle: (the bad item, error class, what the message says)
BAD_ITEMS: list[tuple[Any, type[InvalidCallback], str]] = [
    (("gopher://hooks.example/", {}), InvalidCallbackURL, "must start with http:// or https://"),
    ((URL, {"s": {1}}), InvalidPayload, "not JSON-serialisable"),
    ((URL, {"x": "a" * 300}), PayloadTooLarge, "the limit is 200"),
    ((URL, {}, 5), InvalidCallback, "task_id must be a string"),
    ((URL,), InvalidCallback, "(url, payload[, task_id]) tuple"),
    ([URL, {}], InvalidCallback, "(url, payload[, task_id]) tuple"),
    ({"url": URL}, InvalidCallback, "expected keys url, payload[, task_id]"),
    ({"url": URL, "payload": {}, "secret": "x"}, InvalidCallback, "expected keys url, payload[, task_id]"),
]


@pytest.mark.parametrize("case", BAD_ITEMS, ids=[f"{row[1].__name__}-{n}" for n, row in enumerate(BAD_ITEMS)])
def test_one_bad_item_in_a_batch_enqueues_none_of_it_and_names_the_item(producer, rclient, namespace, case):
    bad, error, why = case
    batch: list[Any] = [(f"{URL}/{n}", {"n": n}) for n in range(10)]
    batch.insert(6, bad)
    with pytest.raises(error) as caught:
        producer(CALLBACK_MAX_PAYLOAD_BYTES=200).enqueue_many(batch)
    message = str(caught.value)
    assert message.startswith("callback #6: ")
    assert why in message
    assert rclient.xlen(Keys(namespace).stream) == 0


def test_a_batch_from_a_generator_is_validated_before_anything_is_sent(producer, rclient, namespace):
    def requests():
        for n in range(5):
            yield (URL, {"n": n})
        yield (URL, {"bad": float("nan")})

    with pytest.raises(InvalidPayload, match="callback #5: "):
        producer().enqueue_many(requests())
    assert rclient.xlen(Keys(namespace).stream) == 0


def test_enqueue_failed_when_redis_does_not_answer(make_settings):
    port = free_port()
    made = CallbackProducer(make_settings(REDIS_URL=f"redis://:hunter2@127.0.0.1:{port}/0"))
    try:
        with pytest.raises(EnqueueFailed) as caught:
            made.enqueue_many([(URL, {"n": n}) for n in range(3)])
    finally:
        made.close()
    message = str(caught.value)
    assert f"Redis at redis://127.0.0.1:{port}/… did not take the callbacks" in message
    assert "hunter2" not in message  # the password stays out of the message
    assert isinstance(caught.value, WorkerError)
    assert not isinstance(caught.value, ValueError)  # not the caller's fault
    assert isinstance(caught.value.__cause__, redis.ConnectionError)


def test_bad_input_is_reported_before_redis_is_needed(make_settings):
    made = CallbackProducer(make_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        with pytest.raises(InvalidCallbackURL):
            made.enqueue("ftp://hooks.example/", {})
    finally:
        made.close()


# -- the package-level API ---------------------------------------------------------------------


@pytest.fixture
def package_env(monkeypatch, namespace, redis_url):
    """Point the process environment at this test's namespace; reset the process-wide producer around it."""

    def point(**overrides: Any) -> None:
        for name, value in settings_env(namespace, redis_url, **overrides).items():
            monkeypatch.setenv(name, value)

    def reset() -> None:
        if worker._producer is not None:
            worker._producer.close()
        worker._producer = None

    reset()
    yield point
    reset()


def test_enqueue_callback_from_the_package(package_env, rclient, namespace):
    package_env()
    from worker import enqueue_callback, enqueue_callbacks

    callback_id = enqueue_callback(URL, {"task_id": "t1"}, task_id="t1")
    assert ID.fullmatch(callback_id)
    more = enqueue_callbacks([(URL, {"n": 1}), {"url": URL, "payload": {"n": 2}}])
    assert len(more) == 2
    assert [f["cid"] for f in stream(rclient, namespace)] == [callback_id, *more]
    with pytest.raises(InvalidPayload):
        enqueue_callback(URL, {1, 2})
    assert rclient.xlen(Keys(namespace).stream) == 3


def test_enqueue_callback_raises_enqueue_failed_when_redis_does_not_answer(package_env):
    package_env(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    from worker import EnqueueFailed as Exported
    from worker import enqueue_callback

    with pytest.raises(Exported):
        enqueue_callback(URL, {"n": 1})
