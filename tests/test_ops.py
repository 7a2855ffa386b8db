"""Operator commands against real Redis: status, recover, unlock, reset, replay, inspect."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from conftest import ROOT, ops_in_process, run_burst, settings_env

from ops import commands, render
from ops.commands import RecoverReport, ReplayFilter
from worker.producer import CallbackProducer, new_callback_id
from worker.streams.client import sync_client
from worker.streams.entry import CallbackEntry
from worker.streams.keys import GROUP, Keys

FAST_CLAIM = {"CALLBACK_TIMEOUT": "0.5", "CALLBACK_CLAIM_IDLE": "5.5"}


@pytest.fixture
def client(redis_url):
    """The client the commands get in production: bytes replies, the worker's timeouts."""
    conn = sync_client(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def cli(namespace, redis_url, monkeypatch, capsys):
    """``cli(*argv, **env_overrides)`` -> (exit code, stdout, stderr) of ``python -m ops``, run in-process."""
    return ops_in_process(namespace, redis_url, monkeypatch, capsys)


def redis_ms(rclient) -> int:
    sec, usec = rclient.time()
    return sec * 1000 + usec // 1000


def entry(url: str, payload: object = None, attempts: int = 0) -> CallbackEntry:
    return CallbackEntry(new_callback_id(), url, json.dumps(payload or {"ok": True}), "task-1", attempts, 1, 1)


def add_dead(rclient, keys, url: str, reason: str, dead_ms: int) -> tuple[str, str]:
    """A dead letter as the leader writes it; returns (dead-letter stream id, callback id)."""
    dead = entry(url, attempts=3)
    extra = {"reason": reason, "status": "410", "error": "", "dead_ms": str(dead_ms)}
    return rclient.xadd(keys.dead, {**dead.fields(), **extra}), dead.callback_id


def read_as(rclient, keys, consumer: str, count: int) -> list[str]:
    """XREADGROUP ``count`` entries as ``consumer`` and never ack them (a consumer that died)."""
    rclient.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    reply = rclient.xreadgroup(GROUP, consumer, {keys.stream: ">"}, count=count)
    return [sid for _, messages in reply for sid, _ in messages]


def test_status_on_a_fresh_namespace(make_settings, client, rclient, namespace, cli):
    state = commands.status(client, make_settings())

    assert (state["backlog"], state["pending"], state["delayed"], state["dead"]) == (0, 0, 0, 0)
    assert state["group"] is False and state["consumers"] == [] and state["lag"] is None
    assert state["oldest_age"] is None and state["next_due"] is None and state["last_send_ago"] is None
    assert state["leader"]["held"] is False and state["leader"]["holder"] is None
    assert set(state["counters"].values()) == {0}
    assert "no leader" in render.status(state, 7)
    code, out, _ = cli("status", "--json")
    assert code == 0 and json.loads(out)["backlog"] == 0
    assert rclient.keys(f"{namespace}:*") == []  # looking creates nothing


def test_status_shows_the_backlog_and_a_stuck_consumer(make_settings, client, rclient, keys, cli):
    settings = make_settings()
    CallbackProducer(settings).enqueue_many([("http://127.0.0.1:9/ok", {"n": n}) for n in range(5)])

    state = commands.status(client, settings)
    assert state["backlog"] == 5 and state["oldest_age"] is not None and state["group"] is False

    read_as(rclient, keys, "dead-consumer", 3)
    state = commands.status(client, settings)
    assert state["backlog"] == 5 and state["pending"] == 3 and state["lag"] == 2
    assert [(c["name"], c["pending"]) for c in state["consumers"]] == [("dead-consumer", 3)]
    code, out, _ = cli("status")
    assert code == 0 and "dead-consumer: 3 pending" in out and "5 in the stream" in out


def test_status_shows_leader_retries_dead_letters_and_counters(make_settings, client, rclient, keys):
    now = redis_ms(rclient)
    rclient.set(keys.lease, "token", px=10_000)
    rclient.hset(keys.lease_info, mapping={"holder": "host:1:abc", "epoch": 4, "acquired_ms": now, "renewed_ms": now})
    rclient.zadd(keys.delayed, {entry("http://127.0.0.1:9/ok").member(): now + 60_000})
    rclient.hset(keys.stats, mapping={"delivered": 7, "handed_back": 2, "last_delivered_ms": now - 3000})
    add_dead(rclient, keys, "http://127.0.0.1:9/ok", "HTTP 410", now)

    state = commands.status(client, make_settings())

    leader = state["leader"]
    assert leader["held"] and leader["holder"] == "host:1:abc" and leader["epoch"] == 4
    assert 0 < leader["ttl"] <= 10
    assert state["delayed"] == 1 and 0 < state["next_due"] <= 60 and state["dead"] == 1
    assert state["counters"]["delivered"] == 7 and state["counters"]["handed_back"] == 2
    assert state["counters"]["retried"] == 0 and state["last_send_ago"] >= 3
    text = render.status(state, 7)
    assert "host:1:abc (epoch 4)" in text and "delivered 7" in text and "1 dead letters" in text


def test_status_of_one_shard_has_no_shard_table(make_settings, client):
    state = commands.status(client, make_settings())
    text = render.status(state, 7)
    assert len(state["shards"]) == 1 and state["leaders"] == {"led": 0, "of": 1}
    assert "shard" not in text and "leader     no leader" in text and "no live worker process" in text


def test_recover_hands_stuck_entries_back_for_exactly_once_delivery(make_settings, client, rclient, keys, receiver):
    settings = make_settings(**FAST_CLAIM)
    ids = CallbackProducer(settings).enqueue_many([(f"{receiver.url}/ok", {"n": n}) for n in range(6)])
    stuck = read_as(rclient, keys, "dead-consumer", 4)
    # Make them look long abandoned without sleeping: XCLAIM ... IDLE sets the idle time.
    rclient.xclaim(keys.stream, GROUP, "dead-consumer", 0, stuck, idle=60_000, justid=True)
    due, later = entry(f"{receiver.url}/ok", attempts=1), entry(f"{receiver.url}/ok", attempts=1)
    rclient.zadd(keys.delayed, {due.member(): 0, later.member(): redis_ms(rclient) + 3_600_000})

    report = commands.recover(client, settings)

    assert report == RecoverReport(promoted=1, handed_back=4)
    state = commands.status(client, settings)
    assert state["pending"] == 0 and state["backlog"] == 7 and state["delayed"] == 1
    assert [(c["name"], c["pending"]) for c in state["consumers"]] == [("dead-consumer", 0)]
    assert state["counters"]["handed_back"] == 4
    assert commands.recover(client, settings) == RecoverReport()  # idempotent
    assert commands.status(client, settings)["backlog"] == 7

    rclient.zrem(keys.delayed, later.member())  # a burst leader waits for every retry; this one is not due
    run_burst(settings)

    assert sorted(receiver.ids()) == sorted([*ids, due.callback_id])  # each exactly once
    assert rclient.xlen(keys.stream) == 0


def test_recover_dead_letters_entries_read_too_often(make_settings, client, rclient, keys):
    settings = make_settings(**FAST_CLAIM)
    CallbackProducer(settings).enqueue_many([("http://127.0.0.1:9/ok", {"n": 1})])
    poison = read_as(rclient, keys, "dead-consumer", 1)
    rclient.xclaim(keys.stream, GROUP, "dead-consumer", 0, poison, idle=60_000, retrycount=50, justid=True)

    report = commands.recover(client, settings)

    assert report == RecoverReport(dead_lettered=1)
    (_, fields), *_ = rclient.xrange(keys.dead)
    assert fields["reason"].startswith("poison") and rclient.xlen(keys.stream) == 0
    (_, update), *_ = rclient.xrevrange(keys.status_updates, count=1)
    assert json.loads(update["u"])[0]["fields"]["status"] == "dead"  # the database hears of it too


def test_recover_removes_a_stale_lease_but_not_a_live_one(make_settings, client, rclient, keys):
    settings = make_settings()  # CALLBACK_LEASE_TTL=2
    now = redis_ms(rclient)
    rclient.set(keys.lease, "token", px=60_000)
    rclient.hset(keys.lease_info, mapping={"holder": "live", "epoch": 1, "acquired_ms": now, "renewed_ms": now})
    assert commands.recover(client, settings).stale_lease is None
    assert rclient.exists(keys.lease)

    rclient.hset(keys.lease_info, mapping={"holder": "frozen", "renewed_ms": now - 60_000})
    assert commands.recover(client, settings).stale_lease == "frozen"
    assert not rclient.exists(keys.lease)


def test_recover_deletes_only_idle_consumers_with_nothing_pending(make_settings, client, rclient, keys):
    settings = make_settings()
    CallbackProducer(settings).enqueue_many([("http://127.0.0.1:9/ok", {"n": 1})])
    read_as(rclient, keys, "holding", 1)
    rclient.xgroup_createconsumer(keys.stream, GROUP, "empty")

    report = commands.recover(client, settings, forget_idle=0)

    assert report.consumers_removed == ["empty"]
    assert [(c["name"], c["pending"]) for c in rclient.xinfo_consumers(keys.stream, GROUP)] == [("holding", 1)]


def test_reset_refuses_without_yes_and_deletes_only_its_namespace(namespace, redis_url, make_settings, rclient, keys):
    other = f"{namespace}x:{{default}}:stream"
    CallbackProducer(make_settings()).enqueue_many([("http://127.0.0.1:9/ok", {"n": 1})])
    rclient.hset(keys.stats, "delivered", 1)
    rclient.rpush(f"{namespace}:dramatiq:default.DQ", "message")
    rclient.xadd(other, {"cid": "keep-me"})
    env = {**settings_env(namespace, redis_url), "PYTHONPATH": str(ROOT)}

    def ops(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ops", *argv], check=False, cwd=ROOT, env=env, capture_output=True, text=True
        )

    try:
        refused = ops("reset")
        assert refused.returncode == 1 and "--yes" in refused.stderr and namespace in refused.stderr
        assert rclient.exists(keys.stream, keys.stats) == 2

        ours = len(rclient.keys(f"{namespace}:*"))
        done = ops("reset", "--yes")
        assert done.returncode == 0 and f"deleted {ours} keys" in done.stdout
        assert rclient.keys(f"{namespace}:*") == []
        assert rclient.xlen(other) == 1
    finally:
        rclient.delete(other)


def test_replay_filters_and_dry_run(make_settings, client, rclient, receiver, cli):
    settings = make_settings()
    keys = Keys(settings.namespace)
    now = redis_ms(rclient)
    old_gone, old_cid = add_dead(rclient, keys, f"{receiver.url}/ok", "HTTP 410 Gone", now - 7_200_000)
    _, fresh_cid = add_dead(rclient, keys, f"{receiver.url}/ok", "timeout after 2s", now)
    other_gone, _ = add_dead(rclient, keys, "http://other.example/hook", "HTTP 410 Gone", now)

    def picked(**selection) -> list[str]:
        found = commands.replay(client, settings, ReplayFilter(**selection), dry_run=True)
        return [letter["stream_id"] for letter in found["matched"]]

    assert picked(reason="410") == [old_gone, other_gone]
    assert picked(reason="410", limit=1) == [old_gone]
    assert picked(host="other.example") == [other_gone]
    assert picked(host="127.0.0.1", older_than=600) == [old_gone]
    assert len(picked(newer_than=600)) == 2
    code, out, _ = cli("replay", "--dry-run", "--reason", "gone")
    assert code == 0 and "would replay 2 dead letters" in out and old_cid in out
    assert rclient.xlen(keys.dead) == 3 and rclient.xlen(keys.stream) == 0

    code, out, _ = cli("replay", "--host", "127.0.0.1", "--json")

    assert code == 0 and json.loads(out)["replayed"] == 2
    assert [sid for sid, _ in rclient.xrange(keys.dead)] == [other_gone]
    requeued = [fields for _, fields in rclient.xrange(keys.stream)]
    assert [f["cid"] for f in requeued] == [old_cid, fresh_cid]
    assert all(f["att"] == "0" and int(f["tq"]) >= now and "reason" not in f for f in requeued)
    run_burst(settings)
    assert sorted(receiver.ids()) == sorted([old_cid, fresh_cid])


def test_replay_of_many_reports_progress(make_settings, client, rclient, keys):
    pipe = rclient.pipeline()
    for _ in range(150):
        pipe.xadd(keys.dead, {**entry("http://127.0.0.1:9/ok").fields(), "reason": "HTTP 500", "dead_ms": "1"})
    pipe.execute()
    calls: list[tuple[int, int]] = []
    result = commands.replay(
        client, make_settings(), ReplayFilter(), dry_run=False, progress=lambda *c: calls.append(c)
    )

    assert result["replayed"] == 150 and calls == [(100, 150), (150, 150)]
    assert rclient.xlen(keys.dead) == 0 and rclient.xlen(keys.stream) == 150
    bar = io.StringIO()
    render.ProgressBar(bar)(150, 150)
    assert "150/150" in bar.getvalue()


def test_replay_starts_the_next_generation_and_inspect_shows_the_history(make_settings, client, rclient, keys):
    settings = make_settings()
    _, cid = add_dead(rclient, keys, "http://127.0.0.1:9/ok", "HTTP 410 Gone", redis_ms(rclient))
    (dead,) = commands.inspect(client, settings, cid)
    assert dead["generation"] == 0 and dead["history"] == []

    assert commands.replay(client, settings, ReplayFilter(), dry_run=False)["replayed"] == 1

    (requeued,) = commands.inspect(client, settings, cid)
    assert requeued["place"] == "stream" and requeued["generation"] == 1 and requeued["fields"]["att"] == "0"
    (past,) = requeued["history"]
    assert (past["generation"], past["attempts"], past["reason"], past["status"]) == (0, 3, "HTTP 410 Gone", "410")
    ((_, update),) = rclient.xrange(keys.status_updates)  # the database hears of it with the move
    (queued,) = json.loads(update["u"])
    assert (queued["key"], queued["fields"]["status"], queued["fields"]["generation"]) == (cid, "queued", 1)


def test_inspect_finds_a_callback_in_stream_delayed_set_and_dead_letters(make_settings, client, rclient, keys, cli):
    settings = make_settings()
    (queued,) = CallbackProducer(settings).enqueue_many([("http://127.0.0.1:9/ok", {"n": 1})])
    (sid,) = read_as(rclient, keys, "dead-consumer", 1)
    waiting = entry("http://127.0.0.1:9/ok", payload={"blob": "x" * 1000}, attempts=2)
    rclient.zadd(keys.delayed, {waiting.member(): redis_ms(rclient) + 60_000})
    dead_sid, dead_cid = add_dead(rclient, keys, "http://127.0.0.1:9/ok", "HTTP 410", redis_ms(rclient))

    (in_stream,) = commands.inspect(client, settings, queued)
    assert in_stream["place"] == "stream" and in_stream["stream_id"] == sid
    assert in_stream["consumer"] == "dead-consumer" and in_stream["deliveries"] == 1
    assert commands.inspect(client, settings, sid) == [in_stream]
    (delayed,) = commands.inspect(client, settings, waiting.callback_id)
    assert delayed["place"] == "delayed" and 0 < delayed["due_in"] <= 60
    assert delayed["fields"]["body"] == f"(not shown: {len(waiting.body)} chars)"  # a body is never printed
    assert [s["place"] for s in commands.inspect(client, settings, dead_cid)] == ["dead"]
    assert commands.inspect(client, settings, dead_sid)[0]["fields"]["reason"] == "HTTP 410"

    code, out, _ = cli("inspect", waiting.callback_id)
    assert code == 0 and "in the delayed retries" in out and "att: 2" in out
    code, out, _ = cli("inspect", "msg_nowhere")
    assert code == 1 and "not found" in out


def test_unlock_needs_yes_then_releases_the_lease(rclient, keys, cli):
    rclient.set(keys.lease, "token", px=60_000)
    rclient.hset(keys.lease_info, mapping={"holder": "host:1:abc", "epoch": 3})
    code, _, err = cli("unlock")
    assert code == 1 and "--yes" in err and rclient.exists(keys.lease)

    code, out, _ = cli("unlock", "--yes")
    assert code == 0 and "host:1:abc" in out and "warning" in out and not rclient.exists(keys.lease)
    code, out, _ = cli("unlock", "--yes")
    assert code == 0 and "no leader lease" in out


def test_a_configuration_error_exits_2_with_one_line(cli):
    code, out, err = cli("status", CALLBACK_CLAIM_IDLE="3")
    assert code == 2 and out == ""
    assert err.startswith("configuration error: CALLBACK_CLAIM_IDLE") and err.count("\n") == 1


def _one_line_error(code: int, out: str, err: str) -> str:
    """The single stderr line of a refused command (never a traceback)."""
    assert code != 0 and "Traceback" not in out + err
    assert err.endswith("\n") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "99999999999999999999-0"],
        ["inspect", "1-99999999999999999999"],
        ["inspect", "9" * 5000],
        ["inspect", "\u0661\u0662-0"],  # Arabic-Indic digits: \d matches them, Redis does not
        ["inspect", "msg_\x00"],
        ["inspect", "msg_\udcff"],  # a byte that was not UTF-8 in argv (surrogateescape)
        ["replay", "--limit", "-1"],
        ["replay", "--limit", "1e3"],
        ["replay", "--older-than", "nan"],
        ["replay", "--newer-than", "inf"],
        ["replay", "--older-than", "-5"],
        ["replay", "--older-than", "abc"],
        ["replay", "--reason", "x\ny"],
        ["nope"],
        [],
        ["status", "--unknown"],
        ["config", "frobnicate"],
    ],
)
def test_malformed_arguments_get_one_line_and_exit_2(cli, argv):
    code, out, err = cli(*argv)
    assert code == 2
    line = _one_line_error(code, out, err)
    assert line.isprintable() or line[:-1].isprintable()


def test_help_exits_0(cli):
    code, out, _ = cli("--help")
    assert code == 0 and "Operator commands" in out


@pytest.mark.parametrize("command", [["status"], ["inspect", "1-0"], ["inspect", "msg_x"], ["recover"], ["replay"]])
@pytest.mark.parametrize("key", ["stream", "dead", "delayed", "stats", "lease_info"])
def test_a_key_of_the_wrong_type_gets_one_line_and_a_non_zero_exit(cli, rclient, keys, command, key):
    name = getattr(keys, key)
    rclient.rpush(name, "not what ops expects")  # a list where a stream, zset or hash belongs
    code, out, err = cli(*command)  # an exception would come out of main() here
    if err:  # (some commands never read that key)
        line = _one_line_error(code, out, err)
        assert "WRONGTYPE" in line and "redis-cli TYPE" in line


def test_inspect_of_an_id_redis_refuses_says_so(cli):
    code, out, err = cli("inspect", "99999999999999999999-0")
    assert "2**64" in _one_line_error(code, out, err)


def test_inspect_with_a_malformed_delayed_member_gets_no_traceback(cli, rclient, keys):
    rclient.zadd(keys.delayed, {'{"cid":"msg_q",': 1})
    code, _, err = cli("inspect", "msg_q")
    assert "Traceback" not in err and code in (0, 1)
