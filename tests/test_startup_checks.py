"""What a worker says at start about a deployment it cannot serve well: a Redis Cluster, too few threads."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import run_python, settings_env, wait_until

from testkit.servers import PrivateRedis, redis_server

pytestmark = pytest.mark.slow


def start_against(url: str, namespace: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    argv = ("-m", "dramatiq", "worker.actors", "--processes", "1", "--threads", "3")
    return run_python(*argv, env=settings_env(namespace, url, **overrides))


def test_a_redis_cluster_without_a_broker_of_its_own_is_refused_at_start_with_a_clear_message(
    tmp_path: Path, namespace
):
    if redis_server() is None:
        pytest.skip("redis-server is not on PATH")
    node = PrivateRedis(tmp_path, "--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf"))
    node.start()
    try:
        implicit = start_against(node.url, namespace)
        explicit = start_against(node.url, namespace, DRAMATIQ_BROKER_URL=node.url)
    finally:
        node.stop()
    assert implicit.returncode == explicit.returncode == 2
    said = implicit.stderr + implicit.stdout
    assert "REDIS_URL names a node of a Redis Cluster" in said and "Set DRAMATIQ_BROKER_URL" in said
    assert "DRAMATIQ_BROKER_URL names a node of a Redis Cluster" in explicit.stderr + explicit.stdout


def test_too_few_threads_are_named_at_start(start_worker):
    worker = start_worker(threads=2)
    assert wait_until(lambda: "start dramatiq with --threads 3 or more" in worker.output(), 30), worker.output()
