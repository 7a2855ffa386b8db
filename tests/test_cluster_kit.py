"""The private Redis Cluster of ``testkit.cluster``: it comes up, routes keys, survives a restart and a failover."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from testkit.cluster import PrivateCluster, cluster_tools

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not cluster_tools(), reason="redis-server or redis-cli is not on PATH"),
]

KEYS = [f"{name}{{{tag}}}" for name, tag in zip("abcdef", range(1, 7), strict=True)]  # a{1} ... f{6}


def _state(port: int) -> str:
    with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as client:
        info = str(client.execute_command("CLUSTER", "INFO"))
    return dict(line.split(":", 1) for line in info.splitlines() if ":" in line)["cluster_state"]


def test_three_masters_route_keys_and_a_restarted_master_keeps_its_data(tmp_path: Path):
    with PrivateCluster(tmp_path) as cluster:
        assert len(cluster.ports) == len(set(cluster.ports)) == 3
        assert cluster.url == f"redis://127.0.0.1:{cluster.ports[0]}/0"
        assert cluster.urls == [f"redis://127.0.0.1:{port}/0" for port in cluster.ports]
        procs = list(cluster.procs.values())
        client = RedisCluster.from_url(cluster.url, decode_responses=True)
        try:
            slots = {client.keyslot(key) for key in KEYS}
            assert len(slots) == len(KEYS)
            for key in KEYS:
                client.set(key, key.upper())
            owners = {cluster.node_of(key) for key in KEYS}
            assert owners == set(cluster.ports)  # six slots spread over all three masters
            for key in KEYS:
                assert cluster.node_of(key) == client.get_node_from_key(key).port

            victim = cluster.node_of(KEYS[0])
            cluster.restart(victim)
            assert all(_state(port) == "ok" for port in cluster.ports)
            assert cluster.node_of(KEYS[0]) == victim
            assert [client.get(key) for key in KEYS] == [key.upper() for key in KEYS]
        finally:
            client.close()
    assert all(proc.poll() is not None for proc in [*procs, *cluster.procs.values()])
    cluster.stop()  # idempotent


def test_failover_promotes_the_replica_and_keys_stay_readable(tmp_path: Path):
    with PrivateCluster(tmp_path, masters=3, replicas=1) as cluster:
        assert len(set(cluster.ports)) == 6
        masters = cluster.master_ports()
        assert len(masters) == 3
        client = RedisCluster.from_url(cluster.url, decode_responses=True)
        try:
            for key in KEYS:
                client.set(key, key.upper())
            old = cluster.node_of(KEYS[0])
            new = cluster.failover(old)
            assert new not in masters
            assert sorted(cluster.master_ports()) == sorted({*masters, new} - {old})
            assert cluster.node_of(KEYS[0]) == new
            assert all(_state(port) == "ok" for port in cluster.ports)
            assert [client.get(key) for key in KEYS] == [key.upper() for key in KEYS]  # follows MOVED to the new master
            client.set(KEYS[0], "after")
            assert client.get_node_from_key(KEYS[0]).port == new
            assert client.get(KEYS[0]) == "after"
        finally:
            client.close()
