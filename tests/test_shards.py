"""Shards: routing by host, one leader per shard spread over processes, one global pace, draining on a change."""

from __future__ import annotations

import bisect
import os
import zlib
from collections import Counter
from collections.abc import Iterator

import pytest
from conftest import SECRET, wait_until

from testkit.receiver import Receiver
from worker.engine.spread import MAX_DECLINES, may_take, should_hand_over
from worker.producer import CallbackProducer
from worker.streams.fleet import live
from worker.streams.keys import Keys
from worker.streams.shards import host_port, shard_of

# -- pure parts -----------------------------------------------------------------------------------


def test_a_url_routes_by_its_host_and_port_the_same_everywhere():
    assert host_port("https://Example.COM/x?y=1") == "example.com:443"
    assert host_port("http://example.com/") == "example.com:80"
    assert host_port("http://127.0.0.1:8080/a") == "127.0.0.1:8080"
    # A stable hash (CRC-32), not Python's per-process hash(): every producer agrees.
    assert shard_of("http://127.0.0.1:8080/a", 7) == zlib.crc32(b"127.0.0.1:8080") % 7
    assert shard_of("http://127.0.0.1:8080/a", 7) == shard_of("http://127.0.0.1:8080/other/path", 7)
    assert shard_of("http://anything/", 1) == 0
    spread = Counter(shard_of(f"http://host-{n}.example:443/", 4) for n in range(400))
    assert set(spread) == {0, 1, 2, 3} and min(spread.values()) > 60


def test_a_shard_keeps_the_queue_keys_and_the_namespace_keys_stay_on_shard_zero():
    keys = Keys("cbw")
    third = keys.of_shard(3)
    assert keys.stream == "cbw:{default}:stream"  # one shard: the layout of every earlier version
    assert third.stream == "cbw:{default:3}:stream"
    assert third.status_updates == "cbw:{default:3}:status"
    assert third.lease == "cbw:{default:3}:leader" and third.label == "default:3"
    for name in ("pace", "config", "status_lease", "shard_counts", "fleet"):
        assert getattr(third, name) == getattr(keys, name)
    assert third.writer_lease == keys.writer_lease


def test_a_process_leading_a_shard_takes_no_second_while_another_leads_none():
    assert may_take("a", {"a": 0, "b": 0})
    assert not may_take("a", {"a": 1, "b": 0})
    assert may_take("a", {"a": 1, "b": 1})  # everyone leads one: the fifth shard goes anywhere
    assert may_take("a", {"a": 1})  # alone
    assert may_take("a", {"a": 3, "b": 0}, declined=MAX_DECLINES)  # never leaves a shard unled for long
    assert should_hand_over("a", {"a": 2, "b": 0})
    assert not should_hand_over("a", {"a": 2, "b": 1})
    assert not should_hand_over("a", {"a": 1, "b": 0})


def test_the_fleet_counts_live_processes_only():
    fields = {"h:1": "2:10000", "h:2": "0:9500", "h:3": "1:100", "h:4": "junk", "h:5": "x:1"}
    assert live(fields, now_ms=12_000, within_ms=5_000) == {"h:1": 2, "h:2": 0}


# -- producers ------------------------------------------------------------------------------------


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    """Eight receivers, eight host:port targets."""
    started = [Receiver(SECRET).start() for _ in range(8)]
    yield started
    for receiver in started:
        receiver.stop()


def test_the_producer_puts_every_callback_of_a_host_into_that_hosts_shard(make_settings, receivers, rclient, keys):
    settings = make_settings(CALLBACK_SHARDS=4)
    requests = [(f"{r.url}/ok/{n}", {"n": n}) for n in range(20) for r in receivers]
    ids = CallbackProducer(settings).enqueue_many(requests)
    assert len(ids) == 160
    for receiver in receivers:
        shard = shard_of(receiver.url, 4)
        urls = [fields["url"] for _, fields in rclient.xrange(keys.of_shard(shard).stream)]
        assert sum(url.startswith(receiver.url) for url in urls) == 20
    assert sum(rclient.xlen(k.stream) for k in keys.shards(4)) == 160
    assert sum(rclient.xlen(k.status_updates) for k in keys.shards(4)) == len({shard_of(r.url, 4) for r in receivers})
    assert rclient.smembers(keys.shard_counts) == {"4"}


# -- worker processes -----------------------------------------------------------------------------


def leaders(rclient, keys: Keys, shards: int) -> dict[int, int]:
    """Shard -> the pid leading it, for the shards that have a leader."""
    found = {}
    for shard_keys in keys.shards(shards):
        holder = rclient.hget(shard_keys.lease_info, "holder") or ""
        if rclient.exists(shard_keys.lease) and holder.count(":") == 2:
            found[shard_keys.shard] = int(holder.split(":")[1])
    return found


def busiest_second(times: list[float]) -> int:
    ordered = sorted(times)
    return max((bisect.bisect_right(ordered, start + 1.0) - index for index, start in enumerate(ordered)), default=0)


def test_four_shards_over_two_processes_deliver_everything_with_one_leader_each_spread(
    start_worker, make_settings, receivers, rclient, keys
):
    worker = start_worker(processes=2, threads=3, CALLBACK_SHARDS=4)
    assert wait_until(lambda: len(leaders(rclient, keys, 4)) == 4, 30), worker.output()[-3000:]
    # Spread: a process leading a shard takes no second while the other leads none.
    assert wait_until(lambda: sorted(Counter(leaders(rclient, keys, 4).values()).values()) == [2, 2], 30), (
        leaders(rclient, keys, 4),
        worker.output()[-3000:],
    )
    settings = make_settings(CALLBACK_SHARDS=4)
    ids = CallbackProducer(settings).enqueue_many([(f"{r.url}/ok", {"n": n}) for n in range(50) for r in receivers])
    for receiver in receivers:
        assert receiver.wait_for(50, timeout=30), worker.output()[-3000:]
    assert sorted(i for r in receivers for i in set(r.ids())) == sorted(ids)
    assert wait_until(lambda: sum(rclient.xlen(k.stream) for k in keys.shards(4)) == 0, 10)


def test_the_global_rate_holds_for_the_namespace_with_four_shards_and_two_processes(
    start_worker, make_settings, receivers, rclient, keys
):
    rate = 40
    env = {"CALLBACK_SHARDS": 4, "CALLBACK_RATE": rate, "CALLBACK_BATCH_SIZE": 10, "CALLBACK_MIN_INTERVAL": 0.25}
    worker = start_worker(processes=2, threads=3, **env)
    assert wait_until(lambda: len(leaders(rclient, keys, 4)) == 4, 30), worker.output()[-3000:]
    settings = make_settings(**env)
    CallbackProducer(settings).enqueue_many([(f"{r.url}/ok", {"n": n}) for n in range(25) for r in receivers])
    for receiver in receivers:
        assert receiver.wait_for(25, timeout=60), worker.output()[-3000:]
    arrivals = [a.at for r in receivers for a in r.snapshot()]
    assert len(arrivals) == 200
    assert busiest_second(arrivals) <= 1.02 * rate + 1  # + 1: a window closed at both ends holds one more slot


def test_lowering_the_shard_count_drains_the_shards_left_over(start_worker, make_settings, receivers, rclient, keys):
    before = make_settings(CALLBACK_SHARDS=4)
    ids = CallbackProducer(before).enqueue_many([(f"{r.url}/ok", {"n": n}) for n in range(10) for r in receivers])
    assert sum(rclient.xlen(k.stream) for k in keys.shards(4)[2:]) > 0  # work waits in shards 2 and 3
    worker = start_worker(processes=1, threads=3, CALLBACK_SHARDS=2)
    for receiver in receivers:
        assert receiver.wait_for(10, timeout=30), worker.output()[-3000:]
    assert sorted(i for r in receivers for i in set(r.ids())) == sorted(ids)
    # Drained shards are let go: their leaders stop once empty, and no new one starts for them.
    assert wait_until(lambda: set(leaders(rclient, keys, 4)) == {0, 1}, 30), worker.output()[-3000:]


def test_kill_9_of_a_process_leading_shards_loses_nothing(start_worker, make_settings, receivers, rclient, keys):
    env = {"CALLBACK_SHARDS": 4, "CALLBACK_LEASE_TTL": 2}
    workers = [start_worker(threads=3, **env), start_worker(threads=3, **env)]
    assert wait_until(lambda: len(leaders(rclient, keys, 4)) == 4, 30)
    settings = make_settings(**env)
    ids = CallbackProducer(settings).enqueue_many(
        [(f"{r.url}/slow/20", {"n": n}) for n in range(60) for r in receivers]
    )
    assert wait_until(lambda: sum(len(r.ids()) for r in receivers) >= 100, 60)
    doomed_pid = next(iter(leaders(rclient, keys, 4).values()))
    doomed = next(w for w in workers if w.proc.pid == os.getpgid(doomed_pid))
    doomed.kill()
    for receiver in receivers:
        assert receiver.wait_for(60, timeout=90), [w.output()[-2000:] for w in workers]
    assert sorted(i for r in receivers for i in set(r.ids())) == sorted(ids)
    assert sum(rclient.xlen(k.dead) for k in keys.shards(4)) == 0


def test_a_garbled_or_huge_recorded_shard_count_is_ignored(rclient, redis_url, keys):
    from worker.streams.client import sync_client
    from worker.streams.protocol import SyncDriver
    from worker.streams.shards import counts_in_use

    rclient.sadd(keys.shard_counts, "3", "²", "99999999", "-1", "abc", "257")
    client = sync_client(redis_url)
    try:
        assert SyncDriver(client).run(counts_in_use(keys, 2)) == 3
    finally:
        client.close()
