"""Metrics in a Dramatiq deployment: multi-process collection, Dramatiq's own message metrics, /metrics.

Every process of one ``dramatiq`` command writes its samples under a directory
named after the command's main process, set before ``prometheus_client`` is
first imported (:func:`use_multiprocess_dir`). One fork process (Dramatiq's
``forks`` hook) serves ``/metrics`` on ``METRICS_PORT``, with a fresh
``MultiProcessCollector`` per scrape.
"""

from __future__ import annotations

import os
import shutil
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy

BASE_DIR = Path("var") / "metrics"


def use_multiprocess_dir() -> None:
    """Point prometheus_client at this command's directory; call before importing it.

    The main ``dramatiq`` process does not import the worker, so each process
    derives the directory from its parent's pid; directories of commands no
    longer running are removed (the "wipe at start" multi-process mode needs).
    """
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    path = BASE_DIR / str(os.getppid())
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path.resolve())
    for stale in BASE_DIR.iterdir():
        if stale.name.isdigit() and stale != path and not _alive(int(stale.name)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DramatiqMetrics(Middleware):
    """Dramatiq's message metrics in seconds (its own middleware reports milliseconds), and the /metrics fork."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        labels = ["queue_name", "actor_name"]
        self.messages = Counter("cbw_dramatiq_messages", "Messages processed.", labels)
        self.errors = Counter("cbw_dramatiq_message_errors", "Messages that raised.", labels)
        self.retries = Counter("cbw_dramatiq_message_retries", "Messages retried.", labels)
        self.in_progress = Gauge(
            "cbw_dramatiq_messages_in_progress", "Messages running.", labels, multiprocess_mode="livesum"
        )
        self.duration = Histogram(
            "cbw_dramatiq_message_duration_seconds",
            "Time spent processing a message.",
            labels,
            buckets=(0.005, 0.025, 0.1, 0.5, 1, 5, 30, 120, 600, 3600),
        )
        self._started: dict[str, float] = {}

    @property
    def forks(self) -> list[Any]:
        return [serve_metrics]

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        self.in_progress.labels(message.queue_name, message.actor_name).inc()
        self._started[message.message_id] = time.perf_counter()

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        labels = (message.queue_name, message.actor_name)
        self.in_progress.labels(*labels).dec()
        started = self._started.pop(message.message_id, None)
        if started is not None:
            self.duration.labels(*labels).observe(time.perf_counter() - started)
        self.messages.labels(*labels).inc()
        if exception is not None:
            self.errors.labels(*labels).inc()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self.after_process_message(broker, message)

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        self.errors.labels(message.queue_name, message.actor_name).inc()

    def before_delay_message(self, broker: Broker, message: MessageProxy) -> None:
        self.retries.labels(message.queue_name, message.actor_name).inc()


class _MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if self.path.split("?")[0] != "/metrics":
            self.send_error(404, "only /metrics is served here")
            return
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
        self.send_response(200)
        self.send_header("content-type", CONTENT_TYPE_LATEST)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


def serve_metrics() -> int:
    """Serve /metrics until the process is stopped (run by Dramatiq as a fork)."""
    from . import settings  # the fork imports the worker module: same settings, same directory

    if settings.metrics_port == 0:
        return 0
    server = ThreadingHTTPServer(("127.0.0.1", settings.metrics_port), _MetricsHandler)
    server.serve_forever()
    return 0
