"""Adaptive delivery against rate-limited receivers: 429 share and delivered rate, with and without learning.

A receiver accepts ``limit`` callbacks per second (a token bucket) and answers
``429 Retry-After: 1`` beyond; a second receiver (another ``host:port``: paces
are per host) is healthy. For each limit, the same backlog goes to a real worker with
``CALLBACK_ADAPTIVE=1`` and with ``=0`` (only the per-callback Retry-After then):
the share of the limited path's answers that were 429 after the first
``WARMUP`` seconds, what it accepted per second then, and how long the healthy
host's callbacks took meanwhile.

Run alone: ``python -m bench --only adaptive --output -``.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from typing import Any

from .harness import CallbackWorker, PrivateRedis, ReceiverProcess, wait_until
from .report import markdown_table

LIMITS = (20, 100)
WATCH = 20.0  # seconds each run is watched
WARMUP = 5.0  # seconds at the start that are not counted (the first refusals teach the rate)
HEALTHY = 2000  # callbacks to the healthy path per run
PATIENT = {"CALLBACK_RETRY_SCHEDULE": "1,2,4,8,16", "CALLBACK_MAX_ATTEMPTS": 12, "CALLBACK_HOST_CONCURRENCY": 64}


def _answers(receiver: ReceiverProcess, path: str) -> list[tuple[float, int]]:
    query = urllib.parse.quote(path)
    with urllib.request.urlopen(f"{receiver.url}/_answers?path={query}", timeout=10) as response:
        return [(float(at), int(status)) for at, status in json.loads(response.read())]


def measure(
    redis: PrivateRedis, receiver: ReceiverProcess, other: ReceiverProcess, limit: int, adaptive: bool
) -> dict[str, Any]:
    """One run: a backlog to the limited path and to the healthy one; the figures after the warm-up."""
    namespace = f"bench-adaptive-{limit}-{int(adaptive)}-{int(time.time())}"
    limited, healthy = f"/limit/{limit}/{namespace}", f"/ok/{namespace}"
    settings = {**PATIENT, "CALLBACK_ADAPTIVE": int(adaptive), "CALLBACK_RATE": 10_000, "CALLBACK_BATCH_SIZE": 500}
    settings["CALLBACK_MIN_INTERVAL"] = 0.05
    with CallbackWorker(redis.url, namespace, settings) as worker:
        worker.wait_ready(redis.client)
        producer = worker.producer()
        try:
            started = time.time()
            producer.enqueue_many([(receiver.url + limited, {"n": n}) for n in range(int(limit * WATCH * 1.5))])
            producer.enqueue_many([(other.url + healthy, {"n": n}) for n in range(HEALTHY)])
            arrivals = other.wait_for(healthy, HEALTHY, timeout=WATCH)
            healthy_seconds = (max(arrivals) - started) if len(arrivals) >= HEALTHY else float("nan")
            wait_until(lambda: time.time() >= started + WATCH, WATCH + 1, 0.1)
            answers = [(at, status) for at, status in _answers(receiver, limited) if started + WARMUP <= at]
        finally:
            producer.close()
    counted = [status for at, status in answers if at < started + WATCH]
    refused = sum(1 for status in counted if status == 429)
    accepted = sum(1 for status in counted if status < 300)
    return {
        "limit": limit,
        "adaptive": adaptive,
        "requests": len(counted),
        "refused_share": refused / len(counted) if counted else float("nan"),
        "accepted_per_s": accepted / (WATCH - WARMUP),
        "healthy_seconds": healthy_seconds,
    }


def run() -> list[dict[str, Any]]:
    """Every limit, with and without adaptation, on one private Redis and one receiver process."""
    with PrivateRedis() as redis, ReceiverProcess() as receiver, ReceiverProcess() as other:
        return [measure(redis, receiver, other, limit, adaptive) for limit in LIMITS for adaptive in (True, False)]


def section(results: list[dict[str, Any]] | None = None) -> tuple[str, str]:
    """The report section: one row per limit and mode."""
    rows = [
        [
            f"{r['limit']}/s",
            "learned (AIMD)" if r["adaptive"] else "off (per-callback Retry-After only)",
            f"{r['refused_share']:.1%}",
            f"{r['accepted_per_s']:.1f}/s = {r['accepted_per_s'] / r['limit']:.2f} x limit",
            str(r["requests"]),
            f"{r['healthy_seconds']:.1f} s",
        ]
        for r in (results if results is not None else run())
    ]
    header = [
        "receiver limit",
        "pacing",
        f"429 share after {WARMUP:g} s",
        "accepted",
        "requests",
        "healthy host: 2,000 in",
    ]
    return "Adaptive delivery (rate-limited receivers)", markdown_table(header, rows)
