"""Prometheus metrics of the worker, all prefixed ``cbw_``, in base units.

Labels never carry a URL or host (unbounded cardinality): outcomes, status
classes and namespaces only. In a Dramatiq deployment the metrics are
multi-process (see ``worker.actors.metrics``); gauges say how they combine.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from .delivery.policy import Action, Decision
from .delivery.sender import AttemptResult
from .engine.observer import DeliveryObserver
from .streams.entry import CallbackEntry
from .streams.stream import QueueSnapshot

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

ENQUEUED = Counter("cbw_callbacks_enqueued", "Callbacks accepted by the producer.", ["namespace"])
ATTEMPTS = Counter(
    "cbw_delivery_attempts",
    "Delivery attempts by what happens next (delivered, retrying, dead) and HTTP status class.",
    ["namespace", "outcome", "status_class"],
)
DELIVERED = Counter("cbw_callbacks_delivered", "Callbacks delivered (2xx).", ["namespace"])
RETRIED = Counter("cbw_callbacks_retried", "Attempts that failed and were scheduled again.", ["namespace"])
DEAD = Counter("cbw_callbacks_dead", "Callbacks dead-lettered, by kind of reason.", ["namespace", "reason"])
DEFERRED = Counter("cbw_callbacks_deferred", "Callbacks parked because their host was saturated.", ["namespace"])
DURATION = Histogram(
    "cbw_delivery_duration_seconds", "Duration of one HTTP attempt.", ["namespace"], buckets=DURATION_BUCKETS
)
LATENCY = Histogram(
    "cbw_delivery_latency_seconds",
    "From enqueue to successful delivery, retries included.",
    ["namespace"],
    buckets=LATENCY_BUCKETS,
)
PACE_WAIT = Counter("cbw_pacing_wait_seconds", "Time the leader waited for global start slots.", ["namespace"])
STATUS_UPDATES = Counter("cbw_status_updates", "Status updates applied by the status writer.", ["namespace"])
STATUS_STATEMENTS = Counter("cbw_status_statements", "SQL statements the status writer executed.", ["namespace"])
STATUS_FLUSH = Histogram(
    "cbw_status_flush_seconds", "One status writer flush: merge, SQL and ack.", ["namespace"], buckets=DURATION_BUCKETS
)
STATUS_ERRORS = Counter("cbw_status_errors", "Status writer turns that failed (database or Redis).", ["namespace"])
IMAGE_STAGE = Histogram(
    "cbw_image_stage_duration_seconds",
    "Duration of one image pipeline step (decode, each stage, save).",
    ["namespace", "stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
IMAGE_TASKS = Counter("cbw_image_tasks", "Image tasks finished, by status (success, failed).", ["namespace", "status"])
IMAGE_FAILURES = Counter(
    "cbw_image_failures", "Failed image tasks by error code and stage.", ["namespace", "code", "stage"]
)


def _queue_gauge(name: str, documentation: str) -> Gauge:
    # Per shard, set by whichever process leads it; the most recent live value wins. Sum over shards.
    return Gauge(name, documentation, ["namespace", "shard"], multiprocess_mode="livemostrecent")


STREAM_LENGTH = _queue_gauge("cbw_stream_length", "Callbacks in the stream (waiting or in flight).")
PENDING = _queue_gauge("cbw_stream_pending", "Stream entries read but not yet settled.")
LAG = _queue_gauge("cbw_consumer_lag", "Stream entries not yet read by the consumer group.")
OLDEST_AGE = _queue_gauge("cbw_oldest_entry_age_seconds", "Age of the oldest entry in the stream.")
DELAYED = _queue_gauge("cbw_delayed_retries", "Callbacks waiting in the delayed set.")
DEAD_LETTERS = _queue_gauge("cbw_dead_letters", "Entries in the dead-letter stream.")
EPOCH = _queue_gauge("cbw_leader_epoch", "Fencing epoch of the current leader.")
# Summed over live processes: exactly 1 per shard when all is well.
LEADER = Gauge("cbw_leader", "Processes leading the shard.", ["namespace", "shard"], multiprocess_mode="livesum")
IN_FLIGHT = Gauge("cbw_in_flight", "Deliveries in flight.", ["namespace", "shard"], multiprocess_mode="livesum")
CIRCUITS_OPEN = Gauge(
    "cbw_host_circuits_open",
    "Hosts whose circuit is open or half-open (their callbacks wait, no attempts but probes).",
    ["namespace", "shard"],
    multiprocess_mode="livesum",
)
HOSTS_HELD = Gauge(
    "cbw_hosts_held",
    "Hosts held back beyond their spacing: a Retry-After, an open circuit or an operator's pause.",
    ["namespace", "shard"],
    multiprocess_mode="livesum",
)
SATURATED = Gauge(
    "cbw_hosts_saturated",
    "Hosts with every delivery slot in use.",
    ["namespace", "shard"],
    multiprocess_mode="livesum",
)


def status_class(status: int | None) -> str:
    """``2xx`` … ``5xx``, or ``none`` when no response came."""
    return "none" if status is None else f"{status // 100}xx"


def dead_reason_kind(reason: str) -> str:
    """The bounded label for a dead-letter reason: ``final``, ``exhausted`` or ``poison``."""
    return reason.split(":", 1)[0] or "unknown"


class DeliveryMetrics(DeliveryObserver):
    """Feeds the Prometheus metrics from the leader's events."""

    def __init__(self, namespace: str, shard: int = 0) -> None:
        self.namespace = namespace
        self.shard = str(shard)
        # Label lookups take a lock and hash the labels: bind the children once.
        self._delivered = DELIVERED.labels(namespace)
        self._retried = RETRIED.labels(namespace)
        self._duration = DURATION.labels(namespace)
        self._latency = LATENCY.labels(namespace)
        self._attempts: dict[tuple[str, str], Any] = {}

    def attempted(self, entry: CallbackEntry, result: AttemptResult, decision: Decision) -> None:
        key = (decision.action.value, status_class(result.status))
        counter = self._attempts.get(key)
        if counter is None:
            counter = self._attempts[key] = ATTEMPTS.labels(self.namespace, *key)
        counter.inc()
        self._duration.observe(result.duration)
        if decision.action is Action.DELIVERED:
            self._delivered.inc()
            if entry.first_enqueued_ms:
                self._latency.observe(max(0.0, time.time() - entry.first_enqueued_ms / 1000))
        elif decision.action is Action.RETRY:
            self._retried.inc()
        else:
            DEAD.labels(self.namespace, dead_reason_kind(decision.reason)).inc()

    def leading(self, namespace: str, epoch: int, leads: bool) -> None:
        LEADER.labels(namespace, self.shard).set(1 if leads else 0)
        EPOCH.labels(namespace, self.shard).set(epoch)
        if not leads:
            for gauge in (IN_FLIGHT, SATURATED, CIRCUITS_OPEN, HOSTS_HELD):
                gauge.labels(namespace, self.shard).set(0)

    def hosts_sampled(self, open_circuits: int, held: int) -> None:
        CIRCUITS_OPEN.labels(self.namespace, self.shard).set(open_circuits)
        HOSTS_HELD.labels(self.namespace, self.shard).set(held)

    def waited_for_pace(self, seconds: float) -> None:
        PACE_WAIT.labels(self.namespace).inc(seconds)

    def deferred(self, entry: CallbackEntry) -> None:
        DEFERRED.labels(self.namespace).inc()

    def set_aside(self, count: int) -> None:
        DEAD.labels(self.namespace, "malformed").inc(count)

    def sampled(self, snapshot: QueueSnapshot, in_flight: int, saturated_hosts: int) -> None:
        shard = (self.namespace, self.shard)
        STREAM_LENGTH.labels(*shard).set(snapshot.length)
        PENDING.labels(*shard).set(snapshot.pending)
        LAG.labels(*shard).set(snapshot.lag)
        OLDEST_AGE.labels(*shard).set(snapshot.oldest_age)
        DELAYED.labels(*shard).set(snapshot.delayed)
        DEAD_LETTERS.labels(*shard).set(snapshot.dead)
        IN_FLIGHT.labels(*shard).set(in_flight)
        SATURATED.labels(*shard).set(saturated_hosts)
