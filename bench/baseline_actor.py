"""Baseline: the plain Dramatiq way to send webhooks, one message and one actor call per callback.

``dramatiq bench.baseline_actor`` runs it; ``BENCH_REDIS_URL`` names the Redis
its broker uses (the Dramatiq CLI needs the broker at import time). The
actor signs like the worker does, so both send the same bytes; it neither
paces nor retries, which only flatters the baseline.
"""

from __future__ import annotations

import os
import time

import aiohttp
import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

from worker.config.parsers import signing_key
from worker.delivery import signing

from .harness import SECRET

NAMESPACE = "bench-dramatiq"
QUEUE = "baseline"
ACTOR_NAME = "post_callback"
CONNECTIONS = 64

_key = signing_key(SECRET)
_session: aiohttp.ClientSession | None = None


async def post_callback(url: str, body: str, callback_id: str) -> int:
    """POST one signed callback; returns the HTTP status."""
    global _session
    if _session is None:  # one session per worker process, made on Dramatiq's event loop
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS))
    data = body.encode()
    headers = signing.headers(_key, callback_id, int(time.time()), data)
    async with _session.post(url, data=data, headers=headers) as response:
        await response.read()
        return response.status


def build_broker(url: str) -> RedisBroker:
    """A Redis broker under the baseline's own namespace, able to run async actors."""
    broker = RedisBroker(url=url, namespace=NAMESPACE)  # type: ignore[no-untyped-call]
    broker.add_middleware(AsyncIO())
    return broker


def declare(broker: RedisBroker) -> dramatiq.Actor:  # type: ignore[type-arg]
    """Declare the baseline actor on ``broker`` (the sender and the worker both need it)."""
    decorate = dramatiq.actor(broker=broker, actor_name=ACTOR_NAME, queue_name=QUEUE, max_retries=0)
    actor: dramatiq.Actor = decorate(post_callback)  # type: ignore[type-arg]
    return actor


if os.environ.get("BENCH_REDIS_URL"):  # imported by the ``dramatiq`` CLI
    broker = build_broker(os.environ["BENCH_REDIS_URL"])
    dramatiq.set_broker(broker)
    actor = declare(broker)
