"""What a worker says at start about a deployment it cannot serve well: a Redis Cluster, too few threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, settings_env, wait_until

from testkit.servers import PrivateRedis, redis_server

pytestmark = pytest.mark.slow


def test_a_redis_cluster_node_is_refused_at_start_with_a_clear_message(tmp_path: Path, namespace):
    if redis_server() is None:
        pytest.skip("redis-server is not on PATH")
    node = PrivateRedis(tmp_path, "--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf"))
    node.start()
    try:
        env = {**os.environ, **settings_env(namespace, node.url), "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-m", "dramatiq", "worker.actors", "--processes", "1", "--threads", "3"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        node.stop()
    assert done.returncode != 0
    assert "REDIS_URL names a node of a Redis Cluster" in done.stderr + done.stdout


def test_too_few_threads_are_named_at_start(start_worker):
    worker = start_worker(threads=2)
    assert wait_until(lambda: "start dramatiq with --threads 3 or more" in worker.output(), 30), worker.output()
