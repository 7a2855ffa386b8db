"""Redis going away under a running worker: a private redis-server that the test kills and restarts."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import free_port, wait_until

from worker.producer import CallbackProducer

pytestmark = pytest.mark.slow


class PrivateRedis:
    """A redis-server of the test's own, with an append-only file so a restart keeps the data."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.skip("redis-server is not on PATH")
        args = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        assert wait_until(lambda: _pings(client), 10), "private redis-server did not start"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis-server fsyncs the AOF and exits
            self.proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_dropped_connections_are_reestablished_and_nothing_is_lost(
    private_redis, start_worker, make_settings, receiver
):
    start_worker(REDIS_URL=private_redis.url, CALLBACK_HOST_CONCURRENCY=4)
    settings = make_settings(REDIS_URL=private_redis.url)
    ids = CallbackProducer(settings).enqueue_many([(f"{receiver.url}/slow/20", {"n": n}) for n in range(600)])
    assert wait_until(lambda: len(receiver.ids()) >= 100, 60)

    assert len(set(receiver.ids())) < 600  # the fault hits mid-burst
    admin = redis.Redis.from_url(private_redis.url)
    for _ in range(3):  # drop every client connection, three times over
        admin.client_kill_filter(_type="normal", skipme=True)
        time.sleep(0.3)

    assert receiver.wait_for(600, timeout=90)
    assert set(receiver.ids()) == set(ids)


def test_a_redis_restart_mid_burst_loses_nothing(private_redis, start_worker, make_settings, receiver):
    start_worker(REDIS_URL=private_redis.url, CALLBACK_HOST_CONCURRENCY=4)
    settings = make_settings(REDIS_URL=private_redis.url)
    ids = CallbackProducer(settings).enqueue_many([(f"{receiver.url}/slow/20", {"n": n}) for n in range(600)])
    assert wait_until(lambda: len(receiver.ids()) >= 100, 60)

    private_redis.stop()
    assert len(set(receiver.ids())) < 600  # the fault hits mid-burst
    time.sleep(1.0)  # the worker sees refused connections for a while
    private_redis.start()

    assert receiver.wait_for(600, timeout=120)
    assert set(receiver.ids()) == set(ids)
