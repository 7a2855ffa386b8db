"""Producer speed: single ``enqueue`` calls vs batched ``enqueue_many``, with no worker consuming."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from worker.config.settings import Settings
from worker.producer import CallbackProducer
from worker.streams.keys import Keys

from . import workload
from .harness import worker_env

URL = "http://127.0.0.1:9/never-delivered"


@dataclass(frozen=True)
class EnqueueRates:
    """Callbacks enqueued per second, one at a time and in batches."""

    single: float
    batched: float
    batch_size: int
    built: float  # entries validated and built per second, without sending them
    xadd_args: int  # arguments of one XADD the producer sends


def measure(redis_url: str, namespace: str, singles: int, batches: int, batch_size: int) -> EnqueueRates:
    """Time both forms on ``namespace`` (its keys are deleted afterwards)."""
    settings = Settings.from_env(worker_env(redis_url, namespace))
    keys = Keys(namespace)
    client = redis.Redis.from_url(redis_url)
    producer = CallbackProducer(settings)
    try:
        producer.enqueue(URL, workload.payload(0))  # connect first
        payloads = [workload.payload(n) for n in range(singles)]
        started = time.perf_counter()
        for n, payload in enumerate(payloads):
            producer.enqueue(URL, payload, task_id=f"task-{n}")
        single = singles / (time.perf_counter() - started)
        client.delete(keys.stream)
        groups = [workload.requests(URL, batch_size, start=index * batch_size) for index in range(batches)]
        started = time.perf_counter()
        for group in groups:
            producer.enqueue_many(group)
        batched = batches * batch_size / (time.perf_counter() - started)
        started = time.perf_counter()
        entries = [producer.entry(request, 0) for group in groups for request in group]
        built = len(entries) / (time.perf_counter() - started)
    finally:
        client.delete(keys.stream)
        producer.close()
        client.close()
    return EnqueueRates(single, batched, batch_size, built, 3 + 2 * len(entries[0].fields()))
