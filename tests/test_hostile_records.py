"""Hostile records at the Redis boundaries (issue 9): set aside with a reason, never a wedge.

Real Redis, a real burst leader and a real status writer. Every malformed stream
entry, delayed-set member or status entry goes to its dead-letter or ``status:bad``
stream with a reason; the good records beside it are delivered or written; the
leader keeps leading (a burst leader ends ``idle``, not with an exception).
Generated inputs (hypothesis) come in batches: each example is one real leader run.
"""

from __future__ import annotations

import json

import redis
from conftest import run_burst
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from worker.producer import CallbackProducer
from worker.storage.engine import make_engine
from worker.storage.models import Callback
from worker.storage.service import run_status_writer
from worker.streams.entry import CallbackEntry
from worker.streams.keys import GROUP, Keys

pytest_plugins = ("storage_fixtures",)

FUZZ = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

BAD_ENTRIES: list[dict[bytes, bytes]] = [
    {b"url": b"http://127.0.0.1:1/", b"body": b"{}"},  # no cid: the reproduction of the issue
    {b"cid": b"msg_1", b"url": b"http://127.0.0.1:1/", b"body": b"{}", b"att": b"abc"},
    {b"cid": b"msg_\xff\xfe", b"url": b"http://127.0.0.1:1/", b"body": b"{}"},  # not UTF-8
    {b"cid": b"msg_2", b"url": b"ftp://127.0.0.1:1/", b"body": b"{}"},
    {b"cid": b"msg_3", b"url": b"http://127.0.0.1:1/", b"body": b"{}", b"t0": b"9" * 5000},
    {b"cid": b"msg_\x00", b"url": b"http://127.0.0.1:1/", b"body": b"{}"},
    {b"\xff": b"\xff"},
]


def _raw_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)  # bytes in, bytes out: what any writer of the stream could do


def _add_good(settings, receiver, n: int, path: str = "ok") -> list[str]:
    producer = CallbackProducer(settings)
    try:
        return producer.enqueue_many([(f"{receiver.url}/{path}", {"n": i}) for i in range(n)])
    finally:
        producer.close()


def _dead_reasons(client: redis.Redis, keys: Keys) -> list[str]:
    return [fields[b"reason"].decode() for _, fields in client.xrange(keys.dead)]


def test_malformed_entries_are_set_aside_and_the_good_ones_beside_them_delivered(make_settings, receiver, keys):
    settings = make_settings()
    client = _raw_client(settings.redis_url)
    ids = _add_good(settings, receiver, 3)
    for fields in BAD_ENTRIES:
        client.xadd(keys.stream, fields)
    ids += _add_good(settings, receiver, 3)

    assert run_burst(settings).reason == "idle"  # it kept leading: no crash, no lost lease

    assert sorted(receiver.ids()) == sorted(ids)
    reasons = _dead_reasons(client, keys)
    assert len(reasons) == len(BAD_ENTRIES) and all(r.startswith("malformed: ") for r in reasons)
    assert "malformed: no 'cid' field" in reasons
    assert int(client.hget(keys.stats, "malformed") or 0) == len(BAD_ENTRIES)
    assert client.xlen(keys.stream) == 0
    first = client.xrange(keys.dead, count=1)[0][1]
    assert first[b"raw.url"] == b"http://127.0.0.1:1/"  # the raw fields are kept for the operator
    client.close()


def test_malformed_entries_pending_on_a_dead_consumer_are_set_aside_when_reclaimed(make_settings, receiver, keys):
    settings = make_settings(CALLBACK_CLAIM_IDLE="7")
    client = _raw_client(settings.redis_url)
    client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    for fields in BAD_ENTRIES:
        client.xadd(keys.stream, fields)
    ids = _add_good(settings, receiver, 2)
    client.xreadgroup(GROUP, "killed-leader", {keys.stream: ">"})  # delivered to a consumer that died
    for sid, _ in client.xrange(keys.stream):  # make them idle long enough to be claimed
        client.xclaim(keys.stream, GROUP, "killed-leader", 0, [sid], idle=60_000)

    assert run_burst(settings).reason == "idle"

    assert sorted(receiver.ids()) == sorted(ids)
    assert len(_dead_reasons(client, keys)) == len(BAD_ENTRIES)
    client.close()


def test_ops_recover_sets_malformed_pending_entries_aside(make_settings, keys):
    from ops import commands

    settings = make_settings()
    client = _raw_client(settings.redis_url)
    client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    for fields in BAD_ENTRIES:
        client.xadd(keys.stream, fields)
    client.xreadgroup(GROUP, "killed-leader", {keys.stream: ">"})
    for sid, _ in client.xrange(keys.stream):
        client.xclaim(keys.stream, GROUP, "killed-leader", 0, [sid], idle=10**6)

    report = commands.recover(client, settings)

    assert report.dead_lettered == len(BAD_ENTRIES) and report.handed_back == 0
    assert len(_dead_reasons(client, keys)) == len(BAD_ENTRIES) and client.xlen(keys.stream) == 0
    client.close()


def test_a_non_json_delayed_member_does_not_block_the_retries_behind_it(make_settings, receiver, keys):
    settings = make_settings()
    client = _raw_client(settings.redis_url)
    good = [CallbackEntry(f"msg_d{i}", f"{receiver.url}/ok", "{}", None, 1, 1, 1) for i in range(3)]
    members = {b"not json": 0, b"[1,2]": 0, b"{}": 0, b'{"cid": {}}': 0, b"\xff": 0, b"[" * 5000: 0}
    client.zadd(keys.delayed, {**members, **{entry.member(): 0 for entry in good}})

    assert run_burst(settings).reason == "idle"

    assert sorted(receiver.ids()) == sorted(e.callback_id for e in good)
    reasons = _dead_reasons(client, keys)
    assert len(reasons) == len(members) and all("not a JSON object of strings" in r for r in reasons)
    assert client.zcard(keys.delayed) == 0
    client.close()


def test_a_receiver_answer_with_a_nul_reaches_the_row(make_settings, receiver, keys, sqlite_url):
    settings = make_settings(DATABASE_URL=sqlite_url)
    (callback_id,) = _add_good(settings, receiver, 1, path="hostile/410")
    run_burst(settings)
    assert run_status_writer(settings, burst=True) == "idle"
    engine = make_engine(sqlite_url)
    with engine.connect() as connection:
        row = connection.execute(select(Callback).where(Callback.id == callback_id)).one()
    engine.dispose()
    assert row.status == "dead" and row.last_status_code == 410
    assert "\x00" not in row.last_error and "gone" in row.last_error


def test_malformed_status_entries_are_set_aside_and_the_writer_goes_on(make_settings, receiver, keys, sqlite_url):
    settings = make_settings(DATABASE_URL=sqlite_url)
    client = _raw_client(settings.redis_url)
    client.xadd(keys.status_updates, {b"u": b"\xff\xfe"})
    client.xadd(keys.status_updates, {b"u": b"[" * 200_000})  # deeper than any JSON parser recursion
    deep = '{"a":' * 990 + "1" + "}" * 990
    client.xadd(keys.status_updates, {b"u": f'[{{"table":"callbacks","key":"k","at":1,"fields":{deep}}}]'.encode()})
    client.xadd(keys.status_updates, {b"\xff": b"\xff"})
    ids = _add_good(settings, receiver, 3)
    run_burst(settings)

    assert run_status_writer(settings, burst=True) == "idle"

    engine = make_engine(sqlite_url)
    with engine.connect() as connection:
        delivered = {r.id for r in connection.execute(select(Callback)) if r.status == "delivered"}
    engine.dispose()
    assert delivered == set(ids)
    assert client.xlen(keys.status_bad) == 4 and client.xlen(keys.status_updates) == 0
    client.close()


# -- generated records ------------------------------------------------------------------------------

NAMES = st.sampled_from([b"cid", b"url", b"body", b"att", b"t0", b"tq", b"task", b"x"]) | st.binary(max_size=8)
VALUES = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"-1", b"abc", b"9" * 40, b"http://127.0.0.1:1/", b"ftp://x/", b"msg_\x00", b"\xff\xfe"]),
    st.text(max_size=20).map(str.encode),
).filter(lambda value: b"://" not in value or value.startswith((b"http://127.0.0.1:", b"ftp://")))  # loopback only
ENTRY = st.dictionaries(NAMES, VALUES, min_size=1, max_size=7)


@FUZZ
@given(bad=st.lists(ENTRY, min_size=125, max_size=125))
def test_generated_stream_entries_never_wedge_the_leader(make_settings, receiver, keys, bad):
    settings = make_settings()
    client = _raw_client(settings.redis_url)
    client.delete(keys.stream, keys.dead, keys.stats)
    ids = _add_good(settings, receiver, 2)
    for fields in bad:
        client.xadd(keys.stream, fields)
    ids += _add_good(settings, receiver, 2)

    assert run_burst(settings).reason == "idle"

    assert set(ids) <= set(receiver.ids())
    # Every generated entry was delivered (it happened to be a valid callback to a dead port: then it
    # is retried and dead-lettered as exhausted), or set aside as malformed; nothing is left behind.
    assert client.xlen(keys.stream) == 0 and client.zcard(keys.delayed) == 0
    assert all(r for r in _dead_reasons(client, keys))
    client.close()


MEMBER = st.one_of(
    st.binary(max_size=60),
    st.dictionaries(
        st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers(), st.none(), st.lists(st.none()))
    ).map(lambda d: json.dumps(d).encode()),
    st.integers(1, 3000).map(lambda n: b"[" * n),
)


@FUZZ
@given(members=st.lists(MEMBER, min_size=125, max_size=125, unique=True))
def test_generated_delayed_members_never_block_promotion(make_settings, receiver, keys, members):
    settings = make_settings(CALLBACK_MAX_ATTEMPTS="1")
    client = _raw_client(settings.redis_url)
    client.delete(keys.stream, keys.dead, keys.delayed, keys.stats)
    good = [CallbackEntry(f"msg_g{i}", f"{receiver.url}/ok", "{}", None, 0, 1, 1) for i in range(2)]
    client.zadd(keys.delayed, {**dict.fromkeys(members, 0), **{e.member().encode(): 0 for e in good}})

    assert run_burst(settings).reason == "idle"

    assert {e.callback_id for e in good} <= set(receiver.ids())
    assert client.zcard(keys.delayed) == 0 and client.xlen(keys.stream) == 0
    client.close()


STATUS_ITEM = st.one_of(
    st.binary(max_size=60),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=8,
    ).map(lambda v: json.dumps([v]).encode()),
    st.sampled_from([b"[" * 100_000, b'[{"table":"callbacks","key":"\\u0000","at":1,"fields":{}}]', b"\xff"]),
)


@FUZZ
@given(items=st.lists(STATUS_ITEM, min_size=125, max_size=125))
def test_generated_status_entries_never_stop_the_writer(make_settings, receiver, keys, sqlite_url, items):
    settings = make_settings(DATABASE_URL=sqlite_url)
    client = _raw_client(settings.redis_url)
    client.delete(keys.status_updates, keys.status_bad)
    for item in items:
        client.xadd(keys.status_updates, {b"u": item})
    ids = _add_good(settings, receiver, 2)

    assert run_status_writer(settings, burst=True) == "idle"

    engine = make_engine(sqlite_url)
    with engine.connect() as connection:
        queued = {r.id for r in connection.execute(select(Callback))}
    engine.dispose()
    assert set(ids) <= queued
    assert client.xlen(keys.status_updates) == 0
    client.close()
