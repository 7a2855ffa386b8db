"""The worker on a real Redis Cluster: shards spread over its nodes, Dramatiq on RabbitMQ, a master restarted.

One private three-master cluster for the module (started and stopped here, on free ports);
each test has its own namespace in it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SECRET, run_python, settings_env, wait_until

from testkit.cluster import PrivateCluster, cluster_tools
from testkit.receiver import Receiver
from worker.config.settings import Settings
from worker.producer import CallbackProducer
from worker.streams.client import sync_client
from worker.streams.keys import Keys
from worker.streams.shards import shard_of

pytestmark = pytest.mark.slow

SHARDS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    if not cluster_tools():
        pytest.skip("redis-server and redis-cli are needed for a Redis Cluster")
    with PrivateCluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    started = [Receiver(SECRET).start() for _ in range(6)]
    yield started
    for receiver in started:
        receiver.stop()


@pytest.fixture
def cluster_env(cluster: PrivateCluster, rabbitmq: str, tmp_path: Path) -> dict[str, str]:
    return {
        "REDIS_URL": cluster.url,
        "DRAMATIQ_BROKER_URL": rabbitmq,
        "CALLBACK_SHARDS": str(SHARDS),
        "DATABASE_URL": f"sqlite:///{tmp_path}/cluster.db",
    }


def rows(database: str) -> dict[str, str]:
    """callback id -> status, from the worker's SQLite database."""
    path = database.removeprefix("sqlite:///")
    try:
        db = sqlite3.connect(path)
        try:
            return dict(db.execute("SELECT id, status FROM callbacks").fetchall())
        finally:
            db.close()
    except sqlite3.OperationalError:  # not created yet
        return {}


def test_shards_spread_over_the_nodes_and_a_worker_delivers_them_all(
    cluster, cluster_env, start_worker, namespace, receivers
):
    keys = Keys(namespace)
    nodes = {cluster.node_of(k.stream) for k in keys.shards(SHARDS)}
    assert len(nodes) >= 2  # different hash tags: different slots, mostly different nodes
    settings = Settings.from_env(settings_env(namespace, cluster.url, **cluster_env))
    worker = start_worker(processes=2, threads=3, **cluster_env)
    ids = CallbackProducer(settings).enqueue_many([(f"{r.url}/ok", {"n": n}) for n in range(40) for r in receivers])
    assert len({shard_of(r.url, SHARDS) for r in receivers}) >= 2
    for receiver in receivers:
        assert receiver.wait_for(40, timeout=60), worker.output()[-3000:]
    assert sorted(i for r in receivers for i in set(r.ids())) == sorted(ids)

    # The status writer followed every shard's status stream into the database.
    def all_delivered() -> bool:
        found = rows(cluster_env["DATABASE_URL"])
        return len(found) == len(ids) and set(found.values()) == {"delivered"}

    assert wait_until(all_delivered, 30), rows(cluster_env["DATABASE_URL"])


def test_a_master_restarted_during_a_burst_loses_nothing(cluster, cluster_env, start_worker, namespace, receivers):
    keys = Keys(namespace)
    settings = Settings.from_env(settings_env(namespace, cluster.url, **cluster_env))
    worker = start_worker(processes=1, threads=3, **cluster_env)
    ids = CallbackProducer(settings).enqueue_many(
        [(f"{r.url}/slow/20", {"n": n}) for n in range(60) for r in receivers]
    )
    assert wait_until(lambda: sum(len(r.ids()) for r in receivers) >= 60, 60), worker.output()[-3000:]
    busiest = max(keys.shards(SHARDS), key=lambda k: sync_client(cluster.url).xlen(k.stream))
    cluster.restart(cluster.node_of(busiest.stream))  # appendfsync always: what was acknowledged survives
    for receiver in receivers:
        assert receiver.wait_for(60, timeout=120), worker.output()[-3000:]
    assert sorted(i for r in receivers for i in set(r.ids())) == sorted(ids)
    client = sync_client(cluster.url)
    assert sum(client.xlen(k.dead) for k in keys.shards(SHARDS)) == 0
    assert wait_until(lambda: sum(client.xlen(k.stream) for k in keys.shards(SHARDS)) == 0, 30)


def test_ops_status_reads_every_shard_of_a_cluster(cluster, cluster_env, namespace, receivers):
    settings = Settings.from_env(settings_env(namespace, cluster.url, **cluster_env))
    CallbackProducer(settings).enqueue_many([(f"{r.url}/ok", {"n": n}) for n in range(5) for r in receivers])
    done = run_python("-m", "ops", "status", "--json", env=settings_env(namespace, cluster.url, **cluster_env))
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["backlog"] == 30
    assert sum(shard["backlog"] for shard in state["shards"]) == 30
