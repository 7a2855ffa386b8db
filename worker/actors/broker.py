"""The Dramatiq broker of a worker deployment: Redis, namespaced, with the worker's middleware."""

from __future__ import annotations

import dramatiq
from dramatiq.asyncio import EventLoopThread, set_event_loop_thread
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

from ..config.settings import Settings
from ..streams.client import is_cluster_node
from ..streams.keys import Keys
from .metrics import DramatiqMetrics
from .watch import LeaseWatch


def queue_name(settings: Settings, name: str) -> str:
    """The Dramatiq queue of ``name`` (``leader``, ``status``, ``images``) for this namespace.

    Redis brokers are namespaced by key prefix, so the plain name serves (and
    stays what earlier versions used); on RabbitMQ the namespace is in the name.
    """
    return f"{name}.{settings.namespace}" if settings.uses_rabbitmq else name


class DaemonAsyncIO(AsyncIO):
    """Dramatiq's AsyncIO middleware, with its event loop on a daemon thread.

    Dramatiq's worker threads are daemons but its event loop thread is not. On
    a second SIGTERM (Dramatiq's hard stop) the main thread exits, yet that one
    thread kept the process alive, still leading and delivering: measured, a
    "killed" worker went on for half an hour. As a daemon it dies with the
    process; its in-flight callbacks stay pending and are reclaimed.
    """

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        thread = EventLoopThread(self.logger)
        thread.daemon = True
        thread.start(timeout=1.0)
        set_event_loop_thread(thread)


def broker_problem(settings: Settings) -> str | None:
    """Why Dramatiq cannot use the configured broker, or ``None``: its Redis broker needs a plain Redis.

    Dramatiq's Redis broker is not Redis-Cluster-safe (its scripts touch keys they
    do not declare), so on a cluster ``DRAMATIQ_BROKER_URL`` must name RabbitMQ or
    a Redis of its own.
    """
    if settings.uses_rabbitmq or not is_cluster_node(settings.dramatiq_url):
        return None
    if settings.broker_url:
        return (
            "DRAMATIQ_BROKER_URL names a node of a Redis Cluster, which Dramatiq's Redis broker cannot use. "
            "Point it at RabbitMQ (amqp://...) or at a plain Redis (redis://...)."
        )
    return (
        "REDIS_URL names a node of a Redis Cluster: the callback queues can live there, but Dramatiq's own "
        "broker cannot (its Redis broker is not cluster-safe). Set DRAMATIQ_BROKER_URL to RabbitMQ "
        "(amqp://user:password@host:5672/%2F) or to a plain, non-cluster Redis (redis://host:6379/0)."
    )


def build_broker(settings: Settings) -> tuple[dramatiq.Broker, LeaseWatch]:
    """Dramatiq's broker (``DRAMATIQ_BROKER_URL``: RabbitMQ or Redis; default ``REDIS_URL``) for the namespace.

    With async actors, message metrics and a lease watch. On Redis the namespace
    prefixes the broker's keys; on RabbitMQ it is part of every queue name
    (:func:`queue_name`), so two namespaces on one RabbitMQ never share queues.
    """
    broker: dramatiq.Broker
    if settings.uses_rabbitmq:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=settings.dramatiq_url)
    else:
        keys = Keys(settings.namespace, settings.queue)
        broker = RedisBroker(url=settings.dramatiq_url, namespace=keys.dramatiq_namespace)  # type: ignore[no-untyped-call]
    broker.add_middleware(DaemonAsyncIO())
    broker.add_middleware(DramatiqMetrics())
    watch = LeaseWatch(settings)
    broker.add_middleware(watch)
    dramatiq.set_broker(broker)
    return broker, watch
