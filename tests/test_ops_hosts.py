"""``python -m ops host list|pause|resume`` against real Redis, and a pause that a real worker obeys."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import ROOT, SECRET, settings_env, wait_until

from ops.hosts import BadHost, target
from testkit.receiver import Receiver
from worker.producer import CallbackProducer
from worker.streams.client import sync_client
from worker.streams.host_book import HostRecord, save
from worker.streams.keys import Keys
from worker.streams.protocol import SyncDriver
from worker.streams.shards import host_port, shard_of

SHARDS = 4


@pytest.fixture
def ops(namespace, redis_url):
    """``ops(*argv, **env_overrides)`` -> the finished ``python -m ops`` process (4 shards unless overridden)."""

    def run(*argv: str, **overrides: object) -> subprocess.CompletedProcess[str]:
        env = {
            **settings_env(namespace, redis_url, **{"CALLBACK_SHARDS": SHARDS, **overrides}),
            "PYTHONPATH": str(ROOT),
        }
        return subprocess.run(
            [sys.executable, "-m", "ops", *argv], check=False, cwd=ROOT, env=env, capture_output=True, text=True
        )

    return run


def home(namespace: str, host: str, shards: int = SHARDS) -> Keys:
    """The keys of the shard ``host`` (host:port) lives in, as the producer routes its callbacks."""
    return Keys(namespace).of_shard(shard_of(f"http://{host}/", shards))


def hosts_in_distinct_shards(count: int) -> list[str]:
    """``count`` host:port names that hash to ``count`` different shards of :data:`SHARDS`."""
    found: dict[int, str] = {}
    for n in range(1000):
        found.setdefault(shard_of(f"http://h{n}.example:443/", SHARDS), f"h{n}.example:443")
    return list(found.values())[:count]


def redis_seconds(rclient) -> float:
    sec, usec = rclient.time()
    return sec + usec / 1e6


def store(redis_url: str, keys: Keys, **fields: object) -> None:
    """One host record as a leader writes it."""
    defaults = {"rate": 50.0, "capacity": 0.0, "paused_until": 0.0, "circuit": "closed", "probe_at": 0.0}
    defaults |= {"last_status": 204, "in_flight": 0, "waiting": 0, "updated": time.time()}
    client = sync_client(redis_url)
    try:
        SyncDriver(client).run(save(keys, [HostRecord(**{**defaults, **fields})], []))
    finally:
        client.close()


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("api.example.com:443", "api.example.com:443"),
        ("API.Example.COM:8443", "api.example.com:8443"),
        ("https://API.example.com/hooks/1?token=secret", "api.example.com:443"),
        ("http://example.com", "example.com:80"),
        ("HTTP://example.com:8080/x", "example.com:8080"),
        ("https://user:pw@example.com/x", "example.com:443"),
        ("[::1]:8080", "::1:8080"),
        ("http://[::1]/", "::1:80"),
        ("127.0.0.1:65535", "127.0.0.1:65535"),
    ],
)
def test_a_host_argument_is_keyed_as_the_worker_keys_its_callbacks(given, name):
    assert target(given) == name
    if "://" in given:
        assert host_port(given) == name  # the producer's shard key of a callback to that URL


BAD_HOSTS = [
    "example.com",  # no port
    "example.com:",
    "example.com:0",
    "example.com:65536",
    "example.com:44x",
    ":443",
    "exa mple.com:443",
    "a/b:443",
    "user@example.com:443",
    "ftp://example.com/",
    "https://example.com:99999/",
    "https:///nohost",
    "bell\x07.example:443",
    "h" * 400 + ":443",
    "https://example.com:99999/hook?token=s3cret",
    "s3cret@example.com:443",
]


@pytest.mark.parametrize("given", BAD_HOSTS)
def test_a_bad_host_is_refused_by_target(given):
    with pytest.raises(BadHost) as refused:
        target(given)
    assert "s3cret" not in str(refused.value)  # never echoed: a URL may carry a token


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_a_bad_host_exits_2_with_one_line(ops, action, rclient, namespace):
    for given in BAD_HOSTS[::3] + BAD_HOSTS[-2:]:
        done = ops("host", action, given)
        assert done.returncode == 2, (given, done.stderr)
        assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr and "argument HOST" in done.stderr and "s3cret" not in done.stderr
    assert rclient.keys(f"{namespace}:*") == []


def test_a_bad_pause_length_exits_2(ops):
    for seconds in ("0", "-5", "nan", "inf", "1e12", "soon"):
        done = ops("host", "pause", "example.com:443", "--for", seconds)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, (seconds, done.stderr)


def test_pause_and_resume_write_into_the_hosts_shard(ops, rclient, namespace):
    name = "api.example.com:443"
    paused = home(namespace, name).hosts_paused
    others = [Keys(namespace).of_shard(s).hosts_paused for s in range(SHARDS) if s != home(namespace, name).shard]

    done = ops("host", "pause", "https://API.example.com/hooks?sig=x", "--for", "90")
    assert done.returncode == 0, done.stderr
    assert name in done.stdout and f"shard {home(namespace, name).shard}" in done.stdout
    assert "housekeeping pass" in done.stdout and "CALLBACK_MAX_DELAY" in done.stdout
    until = int(rclient.hget(paused, name)) / 1000
    assert 85 < until - redis_seconds(rclient) <= 90
    assert not any(rclient.exists(key) for key in others)

    done = ops("host", "pause", name, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["until"] is None
    assert rclient.hget(paused, name) == "0"  # until resumed

    done = ops("host", "resume", name)
    assert done.returncode == 0 and "resumed" in done.stdout, done.stderr
    assert rclient.hget(paused, name) is None

    again = ops("host", "resume", name)
    assert again.returncode == 1 and again.stdout == ""
    assert "not paused" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_a_pause_reaches_the_hosts_shard_under_every_recorded_shard_count(ops, rclient, namespace):
    name = next(h for h in (f"h{n}.example:443" for n in range(100)) if home(namespace, h, 2) != home(namespace, h))
    rclient.sadd(Keys(namespace).shard_counts, "2", "4")  # a namespace going from 2 to 4 shards

    done = ops("host", "pause", name, "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["shards"] == sorted({home(namespace, name, 2).shard, home(namespace, name).shard})
    assert rclient.hget(home(namespace, name, 2).hosts_paused, name) == "0"
    assert rclient.hget(home(namespace, name).hosts_paused, name) == "0"
    resumed = ops("host", "resume", name, "--json")
    assert resumed.returncode == 0 and len(json.loads(resumed.stdout)["shards"]) == 2


def test_list_shows_every_shards_hosts_busiest_first_with_pauses(ops, rclient, namespace, redis_url):
    busy, open_, idle, _ = hosts_in_distinct_shards(4)
    now = time.time()
    store(redis_url, home(namespace, busy), host=busy, waiting=40, in_flight=8, rate=42.5, capacity=50.0)
    store(redis_url, home(namespace, open_), host=open_, waiting=12, circuit="open", probe_at=now + 8, last_status=503)
    store(redis_url, home(namespace, idle), host=idle, paused_until=now + 30, last_status=429, updated=now - 20)
    assert ops("host", "pause", idle, "--for", "600").returncode == 0
    assert ops("host", "pause", "zz.example:443").returncode == 0  # no record: its leader never saw it
    rclient.hset(home(namespace, "over.example:443").hosts_paused, "over.example:443", "1000")  # ran out long ago

    done = ops("host", "list", "--json")

    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    rows = {row["host"]: row for row in listed["hosts"]}
    assert [row["host"] for row in listed["hosts"]] == [busy, open_, idle, "zz.example:443"]
    assert listed["total"] == 4 and listed["more"] == 0
    assert len({row["shard"] for row in listed["hosts"][:3]}) == 3
    assert rows[busy]["shard"] == home(namespace, busy).shard
    assert (rows[busy]["rate"], rows[busy]["capacity"], rows[busy]["paused"]) == (42.5, 50.0, False)
    assert rows[open_]["circuit"] == "open" and 0 < rows[open_]["probe_in"] <= 8
    assert rows[idle]["paused"] and 590 < rows[idle]["paused_for"] <= 600 and 0 < rows[idle]["retry_after"] <= 30
    assert 19 <= rows[idle]["updated_age"] < 40
    assert rows["zz.example:443"]["paused"] and rows["zz.example:443"]["paused_for"] is None

    table = ops("host", "list")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["host", "shard", "rate/s"]
    assert [line.split()[0] for line in lines[1:]] == [busy, open_, idle, "zz.example:443"]
    assert "42.5" in lines[1] and "open, probe in" in lines[2] and "503" in lines[2]
    assert "paused, 10.0 min left" in lines[3] and "paused, until resumed" in lines[4]

    limited = ops("host", "list", "--limit", "2")
    assert limited.returncode == 0 and len(limited.stdout.splitlines()) == 4
    assert limited.stdout.splitlines()[-1].startswith("and 2 more hosts")


def test_list_of_a_fresh_namespace_says_no_host_is_known(ops, rclient, namespace):
    done = ops("host", "list")
    assert done.returncode == 0 and "no host known" in done.stdout
    assert rclient.keys(f"{namespace}:*") == []


@pytest.mark.slow
def test_a_paused_host_gets_nothing_while_another_goes_on_and_everything_once_resumed(
    start_worker, make_settings, receiver, ops
):
    one = {"CALLBACK_SHARDS": 1}  # both hosts in one shard: the leader that holds one back sends to the other
    other = Receiver(SECRET).start()
    try:
        paused_host = receiver.url.removeprefix("http://")
        start_worker(**one)
        producer = CallbackProducer(make_settings(**one))
        producer.enqueue_many([(f"{receiver.url}/ok", {"n": 0}), (f"{other.url}/ok", {"n": 0})])
        assert receiver.wait_for(1, timeout=20) and other.wait_for(1, timeout=20)  # the worker delivers

        assert ops("host", "pause", paused_host, **one).returncode == 0
        time.sleep(1.0)  # ten housekeeping passes (CALLBACK_MAX_DELAY 0.1 s in tests): the leader has it
        producer.enqueue_many([(f"{receiver.url}/ok", {"n": n}) for n in range(1, 6)])
        producer.enqueue_many([(f"{other.url}/ok", {"n": n}) for n in range(1, 6)])
        assert other.wait_for(6, timeout=10)  # the other host goes on
        time.sleep(1.5)  # past a deferral (1 s): the paused host's callbacks came back and were held again
        assert len(receiver.ids()) == 1
        listed = json.loads(ops("host", "list", "--json", **one).stdout)
        assert [row["paused"] for row in listed["hosts"] if row["host"] == paused_host] == [True]

        assert ops("host", "resume", paused_host, **one).returncode == 0
        assert receiver.wait_for(6, timeout=10), len(receiver.ids())
        assert wait_until(lambda: len(receiver.ids()) == 6, timeout=1)  # once each
    finally:
        other.stop()
