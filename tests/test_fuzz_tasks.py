"""Fuzz: Dramatiq messages to the image-edit actor. A task runs to a payload or is refused with ``InvalidTask``.

Generated messages, as Dramatiq delivers them (JSON values: a task dict or a task id) and a few
that JSON cannot carry: dicts with unknown keys, wrong types, ids with NUL or lone surrogates,
garbage or truncated base64, real tiny images with garbage stages and params, paths that try to
leave ``MEDIA_ROOT``, callback URLs of every kind (only ever loopback: no test sends elsewhere, and
batch mode only enqueues). ``parse_task`` and ``TaskRunner.process`` may raise ``InvalidTask``
and nothing else; a refused task writes nothing; a finished one writes exactly its three status
updates, its payload is JSON with a printable, bounded error, and every status update and callback
entry it left in Redis decodes cleanly for the status writer and the leader.
"""

from __future__ import annotations

import base64
import json

import pytest
import redis
from conftest import FUZZ, recorded_updates
from hypothesis import given, settings
from hypothesis import strategies as st
from image_fixtures import gif, jpeg, png_rgba

from worker.streams.entry import CallbackEntry, decode
from worker.tasks import InvalidTask, TaskRunner, parse_task

MAX_BYTES = 8192  # IMAGE_MAX_BYTES: "too large" is reachable with small strings
IMAGES = [base64.b64encode(data).decode() for data in (jpeg((12, 8)), png_rgba((9, 9)), gif((8, 8), frames=2))]

text = st.text(max_size=20)
json_scalar = st.none() | st.booleans() | st.integers() | st.floats() | text
json_value = st.recursive(
    json_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8
)
task_ids = st.one_of(  # used for one task in six; the others are "t-ok", to get past the id
    st.sampled_from(["t-1", "t 2", "x" * 128, "x" * 129, "", "t\x00", "t\udcff", "t\u200b", "\u202et", "-"]),
    text,
    json_value,
)
images = st.one_of(
    st.sampled_from(IMAGES),
    st.sampled_from(IMAGES).map(lambda b64: b64[: len(b64) // 2]),  # truncated
    st.sampled_from(IMAGES).map(lambda b64: "data:image/png;base64," + b64),
    st.binary(max_size=64).map(lambda raw: base64.b64encode(raw).decode()),
    st.sampled_from(["", "====", "not base64!", "A" * (MAX_BYTES * 2), "A" * (MAX_BYTES * 3), "\x00"]),
    json_value,
)
paths = st.one_of(
    st.sampled_from(["in.jpg", "missing.jpg", "../in.jpg", "/etc/hostname", "a/../../x", "in.jpg\x00", ".", ""]),
    text,
    json_value,
)
callback_urls = st.one_of(
    st.none(),
    st.sampled_from(["http://127.0.0.1:9/ok", "http://[::1]:9/x?token=1", "http://127.0.0.1.:9/", "ftp://127.0.0.1/"]),
    text.filter(lambda value: "://" not in value),  # never a URL to anywhere else
    json_scalar.filter(lambda value: not isinstance(value, str)),
)
stage_names = st.sampled_from(["validate", "resize", "format", "grayscale", "model", "decode", "save", "sharpen", ""])
stages = st.one_of(st.none(), st.lists(stage_names, max_size=4), st.lists(stage_names | text, max_size=4), json_value)
param_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(), text, st.booleans(), st.none(), json_value
)
params = st.one_of(
    st.fixed_dictionaries({}, optional={"short_side": param_values, "jpeg_quality": param_values}),
    st.dictionaries(
        st.sampled_from(["short_side", "jpeg_quality", "format", "colour"]) | text, param_values, max_size=3
    ),
    json_value,
)
fields = {
    "task_id": task_ids,
    "image": images,
    "image_path": paths,
    "callback_url": callback_urls,
    "stages": stages,
    "params": params,
}


NOT_JSON = st.sampled_from(
    [b"bytes", ("t",), {1: "a"}, {("t",): 1}, {"task_id": b"t", "image": IMAGES[0]}, float("nan")]
)


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws."""
    return st.sampled_from([False] * (n - 1) + [True])


@st.composite
def tasks(draw: st.DrawFn) -> object:
    """Mostly a task dict that reaches the pipeline, with garbage in some of its fields; else any JSON value."""
    if draw(one_in(10)):
        return draw(json_value | NOT_JSON)
    task: dict[str, object] = {"task_id": draw(task_ids) if draw(one_in(6)) else "t-ok"}
    source = draw(st.sampled_from(["image"] * 4 + ["image_path"] * 2 + ["both", "neither"]))
    if source in ("image", "both"):
        task["image"] = draw(images)
    if source in ("image_path", "both"):
        task["image_path"] = draw(paths)
    for name in ("callback_url", "stages", "params"):
        if draw(st.booleans()):
            task[name] = draw(fields[name])
    if draw(one_in(10)):
        task[draw(text)] = draw(json_value)
    return task


@settings(FUZZ, max_examples=1500)
@given(tasks())
def test_parse_task_refuses_with_invalid_task_or_returns_a_task(message):
    try:
        task = parse_task(message)
    except InvalidTask as e:
        assert str(e).isprintable() and len(str(e)) < 1000, str(e)
    else:
        assert isinstance(task.task_id, str) and task.task_id.isprintable()


@pytest.fixture
def runner(make_settings, tmp_path, redis_url):
    media = tmp_path / "media"
    media.mkdir()
    (media / "in.jpg").write_bytes(jpeg((16, 12)))
    settings = make_settings(MEDIA_ROOT=str(media), IMAGE_MAX_BYTES=str(MAX_BYTES))
    task_runner = TaskRunner(settings, redis.Redis.from_url(redis_url), None)
    yield task_runner
    task_runner.client.close()


@settings(FUZZ, max_examples=250)
@given(st.lists(tasks(), min_size=3, max_size=3))
def test_a_task_runs_to_a_payload_or_is_refused_and_writes_nothing(runner, rclient, keys, batch):
    for message in batch:
        before = rclient.xlen(keys.status_updates)
        try:
            payload = runner.process(message)  # type: ignore[arg-type]
        except InvalidTask as e:
            assert str(e).isprintable() and len(str(e)) < 1000, str(e)
            assert rclient.xlen(keys.status_updates) == before  # a refused task leaves no trace
            continue
        assert payload["status"] in ("success", "failed")
        written = rclient.xlen(keys.status_updates) - before  # running, its outcome, its callback's columns
        assert written == 3 or (written == 4 and message.get("callback_url"))  # + the enqueued callback's row
        json.dumps(payload, allow_nan=False)
        if payload["status"] == "failed":
            error = payload["error"]
            assert set(error) == {"code", "message", "stage"} and error["code"]
            assert error["message"].isprintable() and len(error["message"]) <= 1000, error


def test_what_the_tasks_left_in_redis_decodes_for_the_writer_and_the_leader(runner, rclient, keys):
    # One of each that the fuzzing above finishes with, then the whole stream is read back.
    runner.process({"task_id": "t-a", "image": IMAGES[0], "callback_url": "http://127.0.0.1:9/ok"})
    runner.process({"task_id": "t-b", "image": "!!", "callback_url": "http://[::1]:9/x"})
    runner.process({"task_id": "t-c", "image_path": "../etc", "params": {"short_side": 10**30}})
    assert {u.key for u in recorded_updates(rclient, keys)} == {"t-a", "t-b", "t-c"} | {
        u.key for u in recorded_updates(rclient, keys) if u.table == "callbacks"
    }
    for stream_id, entry_fields in rclient.xrange(keys.stream):
        assert isinstance(decode(stream_id, entry_fields), CallbackEntry)


@settings(FUZZ, max_examples=60)
@given(st.lists(tasks(), min_size=4, max_size=4))
def test_status_and_callbacks_of_fuzzed_tasks_decode_cleanly(runner, rclient, keys, batch):
    rclient.delete(keys.status_updates, keys.stream)
    for message in batch:
        try:
            runner.process(message)  # type: ignore[arg-type]
        except InvalidTask:
            continue
    recorded_updates(rclient, keys)  # asserts that the status writer would reject none of them
    for stream_id, entry_fields in rclient.xrange(keys.stream):
        assert isinstance(decode(stream_id, entry_fields), CallbackEntry)
