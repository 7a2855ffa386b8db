"""Enqueue→arrival latency, measured with the receiver in this process and the worker in another.

Both ends read ``time.time()`` on one machine: the enqueue time is taken just
before the producer call, the arrival time by the receiver when the request
arrives. Only the first arrival of each callback id counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from testkit.receiver import Receiver
from worker.producer import CallbackProducer

from . import workload
from .harness import percentile

WARM_UP = 10


@dataclass(frozen=True)
class LatencyRun:
    """Latencies of one run, in seconds, and how many arrivals the public verifier accepted."""

    latencies: list[float]
    sent: int
    verified: int
    duration: float  # first enqueue to last arrival

    def ms(self, q: float) -> float:
        """The ``q``-th percentile latency in milliseconds."""
        return percentile(self.latencies, q) * 1000

    @property
    def rate(self) -> float:
        """Callbacks delivered per second over the run."""
        return len(self.latencies) / self.duration if self.duration > 0 else float("nan")


def idle(producer: CallbackProducer, receiver: Receiver, count: int, spacing: float, timeout: float) -> LatencyRun:
    """Single enqueues ``spacing`` seconds apart, each to an idle worker (after a short warm-up)."""
    _spaced(producer, receiver.url + "/idle-warm", WARM_UP, spacing)
    receiver.wait_for(WARM_UP, timeout, path="/idle-warm")
    path = "/idle"
    sent = _spaced(producer, receiver.url + path, count, spacing)
    receiver.wait_for(count, timeout, path=path)
    return _collect(receiver, path, sent)


def burst(producer: CallbackProducer, receiver: Receiver, count: int, timeout: float) -> LatencyRun:
    """Every callback enqueued in one ``enqueue_many`` round trip, delivered unpaced."""
    path = "/burst"
    requests = workload.requests(receiver.url + path, count)
    started = time.time()
    ids = producer.enqueue_many(requests)
    receiver.wait_for(count, timeout, path=path)
    return _collect(receiver, path, dict.fromkeys(ids, started))


def _spaced(producer: CallbackProducer, url: str, count: int, spacing: float) -> dict[str, float]:
    sent: dict[str, float] = {}
    next_at = time.monotonic()
    for n in range(count):
        at = time.time()
        sent[producer.enqueue(url, workload.payload(n), task_id=f"task-{n}")] = at
        next_at += spacing
        time.sleep(max(0.0, next_at - time.monotonic()))
    return sent


def _collect(receiver: Receiver, path: str, sent: dict[str, float]) -> LatencyRun:
    first: dict[str, float] = {}
    verified = 0
    for arrival in receiver.snapshot():
        if arrival.path != path or arrival.webhook_id in first or arrival.webhook_id not in sent:
            continue
        first[arrival.webhook_id] = arrival.at
        verified += arrival.verified is True
    latencies = [at - sent[callback_id] for callback_id, at in first.items()]
    duration = max(first.values(), default=0.0) - min(sent.values(), default=0.0)
    return LatencyRun(latencies, len(sent), verified, duration)
