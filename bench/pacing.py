"""Global pacing: does a backlog leave at the configured rate, never faster and not much slower?

The worker is given a backlog in one ``enqueue_many`` and the arrival times
recorded by the receiver process (which does nothing else meanwhile, so its
time stamps are not delayed by this process) are examined: the most arrivals in any one-second window
(sliding over the arrivals) must not exceed the rate, and the mean rate from
first to last arrival must stay close to it. ``deferred`` is the worker's own
count of entries it parked instead of delivering (a symptom, see the report).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from worker.config.settings import Settings

from . import workload
from .harness import CallbackWorker, ReceiverProcess


@dataclass(frozen=True)
class PacingRun:
    """Arrivals of one paced backlog."""

    settings: Settings
    sent: int
    times: list[float]
    deferred: int
    started: float

    @property
    def rate(self) -> float:
        """The configured global rate."""
        return self.settings.rate

    @property
    def delivered(self) -> int:
        """Callbacks that arrived in time."""
        return len(self.times)

    @property
    def max_window(self) -> int:
        """The most arrivals in any one-second window."""
        return max_in_window(self.times, 1.0)

    @property
    def mean_rate(self) -> float:
        """Arrivals per second from the first arrival to the last."""
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])

    @property
    def duration(self) -> float:
        """Seconds from the enqueue to the last arrival."""
        return (self.times[-1] - self.started) if self.times else 0.0


def max_in_window(times: list[float], width: float) -> int:
    """The most of the sorted ``times`` within any closed interval ``width`` long."""
    best = start = 0
    for end, at in enumerate(times):
        while times[start] < at - width:
            start += 1
        best = max(best, end - start + 1)
    return best


def backlog(
    worker: CallbackWorker, client: redis.Redis, receiver: ReceiverProcess, count: int, timeout: float
) -> PacingRun:
    """Enqueue ``count`` callbacks at once and record their arrivals for at most ``timeout`` seconds."""
    path = f"/paced-{worker.keys.namespace}"
    producer = worker.producer()
    try:
        producer.enqueue(receiver.url + path + "-warm", workload.payload(0))  # opens the worker's connection
        receiver.wait_for(path + "-warm", 1, 10)
        time.sleep(1.0)  # the warm-up's pace slot lies in the past: the backlog starts from an idle pace
        requests = workload.requests(receiver.url + path, count)
        started = time.time()
        producer.enqueue_many(requests)
        times = sorted(receiver.wait_for(path, count, timeout))
    finally:
        producer.close()
    return PacingRun(worker.settings, count, times, worker.stat(client, "deferred"), started)
