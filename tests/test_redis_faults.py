"""Redis going away under a running worker: a private redis-server that the test kills and restarts."""

from __future__ import annotations

import time

import pytest
import redis
from conftest import wait_until

from worker.producer import CallbackProducer

pytestmark = pytest.mark.slow


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
