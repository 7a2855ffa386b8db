"""The Dramatiq broker of a worker deployment: Redis, namespaced, with the worker's middleware."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

from ..keys import Keys
from ..settings import Settings
from .metrics import DramatiqMetrics
from .watch import LeaderWatch


def build_broker(settings: Settings) -> RedisBroker:
    """A Redis broker under the namespace's own key prefix, with async actors and the leader watch."""
    keys = Keys(settings.namespace, settings.queue)
    broker = RedisBroker(url=settings.redis_url, namespace=keys.dramatiq_namespace)  # type: ignore[no-untyped-call]
    broker.add_middleware(AsyncIO())
    broker.add_middleware(DramatiqMetrics())
    broker.add_middleware(LeaderWatch(settings))
    dramatiq.set_broker(broker)
    return broker
