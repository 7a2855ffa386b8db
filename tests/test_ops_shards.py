"""Operator commands on a sharded namespace (``CALLBACK_SHARDS=3``), against real Redis.

Every command looks at every shard that may hold work, sums what it finds and says which shard
holds what; no command names keys of two shards (two Redis Cluster slots) at once.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest
import redis
from conftest import ops_in_process
from redis.crc import key_slot

from ops import commands, render
from ops.commands import ReplayFilter
from worker.producer import CallbackProducer, new_callback_id
from worker.streams.client import sync_client
from worker.streams.entry import CallbackEntry
from worker.streams.keys import GROUP, Keys
from worker.streams.shards import shard_of

SHARDS = {"CALLBACK_SHARDS": "3"}


def url_in(shard: int, shards: int = 3) -> str:
    """A callback URL on 127.0.0.1 whose host:port lands in ``shard`` (``shard_of`` picks it, as the producer)."""
    port = next(port for port in range(9000, 9999) if shard_of(f"http://127.0.0.1:{port}/", shards) == shard)
    return f"http://127.0.0.1:{port}/ok"


@pytest.fixture
def client(redis_url):
    """The client the commands get in production: bytes replies, the worker's timeouts."""
    conn = sync_client(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def cli(namespace, redis_url, monkeypatch, capsys):
    """``cli(*argv, **env_overrides)`` -> (exit code, stdout, stderr) of ``python -m ops``, 3 shards by default."""
    return ops_in_process(namespace, redis_url, monkeypatch, capsys, **SHARDS)


def redis_ms(rclient) -> int:
    sec, usec = rclient.time()  # the scripts' clock
    return sec * 1000 + usec // 1000


def add_dead(rclient, keys: Keys, url: str, reason: str, ago: int = 0) -> tuple[str, str]:
    """A dead letter in ``keys``' shard, dead ``ago`` ms ago, as the leader writes it; (its stream id, callback id)."""
    dead, at = CallbackEntry(new_callback_id(), url, '{"ok": true}', "task-1", 3, 1, 1), redis_ms(rclient) - ago
    extra = {"reason": reason, "status": "410", "error": "", "dead_ms": str(at)}
    return rclient.xadd(keys.dead, {**dead.fields(), **extra}, id=f"{at}-*"), dead.callback_id


def abandon(rclient, keys: Keys, count: int) -> list[str]:
    """Read ``count`` entries of the shard's stream as a consumer that then died, idle for a minute."""
    rclient.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    reply = rclient.xreadgroup(GROUP, "dead-consumer", {keys.stream: ">"}, count=count)
    ids = [sid for _, messages in reply for sid, _ in messages]
    rclient.xclaim(keys.stream, GROUP, "dead-consumer", 0, ids, idle=60_000, justid=True)
    return ids


def hold_lease(rclient, keys: Keys, holder: str, epoch: int) -> None:
    now = redis_ms(rclient)
    rclient.set(keys.lease, f"token-{holder}", px=60_000)
    rclient.hset(keys.lease_info, mapping={"holder": holder, "epoch": epoch, "acquired_ms": now, "renewed_ms": now})


def test_status_sums_the_shards_and_shows_each(make_settings, rclient, keys, cli):
    settings = make_settings(**SHARDS)
    CallbackProducer(settings).enqueue_many([(url_in(shard), {"n": n}) for n, shard in enumerate([0, 1, 1, 2, 2, 2])])
    shard = keys.shards(3)
    abandon(rclient, shard[1], 1)
    hold_lease(rclient, shard[1], "host-b:7:abcd", 5)
    rclient.zadd(shard[2].delayed, {CallbackEntry(new_callback_id(), url_in(2), "{}").member(): 1})
    add_dead(rclient, shard[0], url_in(0), "HTTP 410")
    rclient.hset(shard[0].stats, mapping={"delivered": 4, "last_delivered_ms": redis_ms(rclient) - 9000})
    rclient.hset(shard[2].stats, mapping={"delivered": 3, "last_delivered_ms": redis_ms(rclient) - 2000})
    wall = int(time.time() * 1000)
    rclient.hset(keys.fleet, mapping={"host-b:7": f"1:{wall}", "host-c:8": f"0:{wall}", "gone:9": f"2:{wall - 60_000}"})

    code, out, _ = cli("status", "--json")

    assert code == 0
    state = json.loads(out)
    assert [s["backlog"] for s in state["shards"]] == [1, 2, 3] and state["backlog"] == 6
    assert [s["shard"] for s in state["shards"]] == [0, 1, 2]
    assert [s["label"] for s in state["shards"]] == ["default", "default:1", "default:2"]
    assert (state["pending"], state["delayed"], state["dead"]) == (1, 1, 1)
    assert [(s["pending"], s["delayed"], s["dead"]) for s in state["shards"]] == [(0, 0, 1), (1, 0, 0), (0, 1, 0)]
    assert state["lag"] == 5  # shard 1's group read 1 of 2; shards 0 and 2 have no group yet: all unread
    assert [(c["shard"], c["name"], c["pending"]) for c in state["consumers"]] == [(1, "dead-consumer", 1)]
    assert state["counters"]["delivered"] == 7 and 2 <= state["last_send_ago"] < 9  # the latest of the shards
    assert state["oldest_age"] == max(s["oldest_age"] for s in state["shards"])
    assert state["next_due"] == 0 and [s["next_due"] for s in state["shards"]][:2] == [None, None]
    assert state["leader"]["held"] is False  # shard 0's, as before shards
    assert state["shards"][1]["leader"]["holder"] == "host-b:7:abcd" and state["shards"][1]["leader"]["epoch"] == 5
    assert state["leaders"] == {"led": 1, "of": 3} and state["configured_shards"] == 3
    assert state["fleet"] == [{"process": "host-b:7", "leads": 1}, {"process": "host-c:8", "leads": 0}]
    assert state["writer"]["backlog"] == 3  # each shard's "queued" update, in that shard's status stream

    code, text, _ = cli("status")
    assert code == 0 and "6 in the stream" in text and "3 shards" in text and "1 of 3 shards have a leader" in text
    header, *rows, total = text.split("\n\n")[1].splitlines()
    assert header.split()[:5] == ["shard", "backlog", "pending", "delayed", "dead"]
    assert rows[1].split() == ["1", "2", "1", "0", "0", "host-b:7:abcd", "5"]
    assert rows[2].split() == ["2", "3", "0", "1", "0", "no", "leader", "-"]
    assert total.split()[:5] == ["total", "6", "1", "1", "1"]
    assert "host-b:7 leads 1" in text and "gone:9" not in text and "dead-consumer (shard 1)" in text


def test_dead_letters_of_two_shards_are_found_and_each_replayed_into_its_own(make_settings, client, rclient, keys, cli):
    shard = keys.shards(3)
    first, first_cid = add_dead(rclient, shard[2], url_in(2), "HTTP 410 Gone", ago=3000)
    second, second_cid = add_dead(rclient, shard[0], url_in(0), "HTTP 410 Gone", ago=2000)
    add_dead(rclient, shard[1], url_in(1), "timeout after 2s", ago=1000)
    settings = make_settings(**SHARDS)

    (found,) = commands.inspect(client, settings, first_cid)
    assert (found["shard"], found["place"], found["stream_id"]) == (2, "dead", first)
    assert [(s["shard"], s["place"]) for s in commands.inspect(client, settings, second_cid)] == [(0, "dead")]
    code, out, _ = cli("inspect", first_cid)
    assert code == 0 and "in the dead letters of shard 2" in out

    def picked(**selection: Any) -> list[tuple[int, str]]:
        found = commands.replay(client, settings, ReplayFilter(**selection), dry_run=True)
        return [(letter["shard"], letter["stream_id"]) for letter in found["matched"]]

    assert picked(reason="gone") == [(2, first), (0, second)]  # oldest first, across shards
    assert picked(reason="gone", limit=1) == [(2, first)]  # the limit counts every shard's
    assert len(picked()) == 3 and picked(limit=2) == [(2, first), (0, second)]
    code, out, _ = cli("replay", "--dry-run", "--reason", "gone")
    assert code == 0 and "would replay 2 dead letters" in out and f"shard 2  {first}" in out

    code, out, _ = cli("replay", "--reason", "gone", "--json")

    assert code == 0
    result = json.loads(out)
    assert result["replayed"] == 2 and [m["shard"] for m in result["matched"]] == [2, 0]
    assert [f["cid"] for _, f in rclient.xrange(shard[2].stream)] == [first_cid]
    assert [f["cid"] for _, f in rclient.xrange(shard[0].stream)] == [second_cid]
    assert rclient.xlen(shard[1].stream) == 0 and rclient.xlen(shard[1].dead) == 1
    assert rclient.xlen(shard[0].dead) == rclient.xlen(shard[2].dead) == 0
    (requeued,) = commands.inspect(client, settings, first_cid)
    assert (requeued["shard"], requeued["place"], requeued["generation"]) == (2, "stream", 1)


def test_recover_hands_back_idle_pending_entries_of_every_shard(make_settings, client, rclient, keys, cli):
    settings = make_settings(**SHARDS)
    CallbackProducer(settings).enqueue_many([(url_in(shard), {"n": n}) for n, shard in enumerate([0, 1, 1, 2, 2])])
    shard = keys.shards(3)
    abandon(rclient, shard[1], 2)
    abandon(rclient, shard[2], 1)
    rclient.zadd(shard[0].delayed, {CallbackEntry(new_callback_id(), url_in(0), "{}", attempts=1).member(): 0})
    now = redis_ms(rclient)
    rclient.set(shard[2].lease, "token", px=60_000)
    rclient.hset(shard[2].lease_info, mapping={"holder": "frozen", "epoch": 2, "renewed_ms": now - 60_000})

    report = commands.recover(client, settings)

    assert (report.handed_back, report.promoted, report.dead_lettered, report.shards) == (3, 1, 0, 3)
    assert report.stale_leases == [{"shard": 2, "holder": "frozen"}] and report.stale_lease is None
    assert not rclient.exists(shard[2].lease)
    state = commands.status(client, settings)
    assert state["pending"] == 0 and [s["backlog"] for s in state["shards"]] == [2, 2, 2]
    assert state["counters"]["handed_back"] == 3
    assert "of shard 2 of frozen" in render.recover(report, 7)
    code, out, _ = cli("recover", "--json")
    assert code == 0 and json.loads(out)["handed_back"] == 0 and "nothing to recover (in 3 shards)" in cli("recover")[1]


def test_unlock_releases_one_shard_or_every_shard(rclient, keys, cli):
    shard = keys.shards(3)
    for number, one in enumerate(shard):
        hold_lease(rclient, one, f"host:{number}:abc", number + 1)
    code, _, err = cli("unlock", "--shard", "1")
    assert code == 1 and "shard 1" in err and "--yes" in err

    code, out, _ = cli("unlock", "--yes", "--shard", "1", "--json")

    assert code == 0
    result = json.loads(out)
    assert result["shards"] == [{"shard": 1, "released": True, "holder": "host:1:abc", "epoch": 2}]
    assert (result["released"], result["holder"], result["epoch"]) == (True, "host:1:abc", 2)
    assert [bool(rclient.exists(one.lease)) for one in shard] == [True, False, True]
    code, out, err = cli("unlock", "--yes", "--shard", "3")
    assert code == 1 and out == "" and "shard 3 is not in use" in err and err.count("\n") == 1

    code, out, _ = cli("unlock", "--yes")

    assert code == 0 and "of shard 0 of host:0:abc" in out and "of shard 2 of host:2:abc" in out
    assert "shard 1" not in out and not any(rclient.exists(one.lease) for one in shard)


def test_a_lowered_shard_count_still_shows_the_old_shards(make_settings, client, rclient, keys, cli):
    ids = CallbackProducer(make_settings(**SHARDS)).enqueue_many([(url_in(s), {"n": s}) for s in (0, 1, 2)])
    add_dead(rclient, keys.of_shard(2), url_in(2), "HTTP 500")
    lowered = make_settings(CALLBACK_SHARDS="2")

    state = commands.status(client, lowered)

    assert len(state["shards"]) == 3 and state["backlog"] == 3 and state["dead"] == 1
    assert [s["draining"] for s in state["shards"]] == [False, False, True] and state["configured_shards"] == 2
    assert "3 shards; shard 2 draining (CALLBACK_SHARDS is 2)" in render.status(state, 7)
    assert [s["shard"] for s in commands.inspect(client, lowered, ids[2])] == [2]
    code, out, _ = cli("replay", "--json", CALLBACK_SHARDS="1")
    assert code == 0 and json.loads(out)["replayed"] == 1 and rclient.xlen(keys.of_shard(2).stream) == 2


def test_reset_deletes_every_shard_and_nothing_else(namespace, make_settings, client, rclient, keys):
    other = Keys(f"{namespace}x", shard=2).stream
    CallbackProducer(make_settings(**SHARDS)).enqueue_many([(url_in(s), {"n": s}) for s in (0, 1, 2)])
    add_dead(rclient, keys.of_shard(1), url_in(1), "HTTP 500")
    rclient.rpush(f"{namespace}:dramatiq:default.DQ", "message")
    rclient.xadd(other, {"cid": "keep-me"})
    tags = {re.search(r"\{[^}]*\}", key).group() for key in rclient.keys(f"{namespace}:{{*")}
    assert tags == {"{default}", "{default:1}", "{default:2}"}
    try:
        result = commands.reset(client, make_settings(**SHARDS))
        assert result["deleted"] > 0 and rclient.keys(f"{namespace}:*") == []
        assert rclient.xlen(other) == 1
    finally:
        rclient.delete(other)


def test_no_command_names_keys_of_two_slots_at_once(make_settings, rclient, redis_url, keys, cli):
    """Redis Cluster readiness: every command, MULTI block and script call stays within one slot (seen by MONITOR)."""
    namespace = keys.namespace
    CallbackProducer(make_settings(**SHARDS)).enqueue_many([(url_in(s), {"n": s}) for s in (0, 1, 2, 2)])
    for one in keys.shards(3):
        add_dead(rclient, one, url_in(one.shard), "HTTP 410")
        hold_lease(rclient, one, f"h:{one.shard}:x", 1)
    abandon(rclient, keys.of_shard(2), 2)
    rclient.rpush(f"{namespace}:dramatiq:default.DQ", "message")
    commands_run = (["status"], ["recover"], ["inspect", "msg_x"], ["replay"], ["unlock", "--yes"], ["reset", "--yes"])
    seen = SlotWatch(redis_url, namespace)
    try:
        for argv in commands_run:
            assert cli(*argv)[0] in (0, 1), argv
    finally:
        rclient.echo(f"{namespace}:done")
        seen.join(10)
    assert not seen.is_alive() and seen.groups, "MONITOR did not see the commands through"
    mixed = [group for group in seen.groups if len({key_slot(key.encode()) for key in group[1]}) > 1]
    assert mixed == []


class SlotWatch(threading.Thread):
    """The commands naming ``namespace``'s keys as MONITOR shows them, grouped by what must share one slot.

    Each command on its own, and a client's MULTI ... EXEC as one. Recorded until ``ECHO <namespace>:done``.
    """

    def __init__(self, redis_url: str, namespace: str) -> None:
        super().__init__(daemon=True)
        self.names, self.done = re.compile(re.escape(namespace) + r":\S+"), f"echo {namespace}:done"
        self.groups: list[tuple[str, list[str]]] = []  # (what, the namespace's keys it names)
        self._conn = redis.Redis.from_url(redis_url)
        self._monitor = self._conn.monitor().__enter__()
        self.start()

    def run(self) -> None:
        open_multi: dict[str, list[str]] = {}  # client -> keys named since its MULTI
        try:
            while (seen := self._monitor.next_command()) and seen["command"].lower() != self.done:
                command, who = seen["command"], f"{seen['client_address']}:{seen['client_port']}"
                verb, names = command.split(" ", 1)[0].lower(), self.names.findall(command)
                if verb == "multi":
                    open_multi[who] = []
                elif verb in ("exec", "discard") and who in open_multi:
                    self.groups.append((f"MULTI by {who}", open_multi.pop(who)))
                elif who in open_multi:
                    open_multi[who] += names
                if names:
                    self.groups.append((command[:200], names))
        finally:
            self._monitor.__exit__()
            self._conn.close()
