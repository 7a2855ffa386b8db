"""Prometheus metrics served by a real worker: they move as deliveries happen."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request

import pytest
from conftest import free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families

from worker.producer import CallbackProducer

pytestmark = pytest.mark.slow


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_and_gauges_move_as_callbacks_are_delivered(
    start_worker, make_settings, receiver, namespace, tmp_path
):
    port = free_port()
    start_worker(processes=2, METRICS_PORT=port, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    settings = make_settings()
    producer = CallbackProducer(settings)
    producer.enqueue_many([(f"{receiver.url}/ok", {"n": n}) for n in range(30)])
    producer.enqueue(f"{receiver.url}/status/404", {"n": "dead"})
    assert receiver.wait_for(31, timeout=30)

    def settled() -> bool:
        try:
            samples = scrape(port)
        except OSError:
            return False
        return value(samples, "cbw_callbacks_delivered_total", namespace=namespace) == 30

    assert wait_until(settled, 20)
    samples = scrape(port)
    ns = {"namespace": namespace}
    assert value(samples, "cbw_delivery_attempts_total", outcome="delivered", status_class="2xx", **ns) == 30
    assert value(samples, "cbw_delivery_attempts_total", outcome="dead", status_class="4xx", **ns) == 1
    assert value(samples, "cbw_callbacks_dead_total", reason="final", **ns) == 1
    assert value(samples, "cbw_delivery_duration_seconds_count", **ns) == 31
    assert value(samples, "cbw_delivery_latency_seconds_count", **ns) == 30
    shard = {**ns, "shard": "0"}  # queue gauges are per shard
    assert wait_until(lambda: value(scrape(port), "cbw_dead_letters", **shard) == 1, 10)
    samples = scrape(port)
    assert value(samples, "cbw_leader", **shard) == 1
    assert value(samples, "cbw_leader_epoch", **shard) == 1
    assert value(samples, "cbw_stream_length", **shard) == 0
    # Dramatiq's own metrics: the leader's message is running for as long as it leads.
    assert value(samples, "cbw_dramatiq_messages_in_progress", queue_name="leader", actor_name="lead_callbacks") == 1
    assert not any("url" in dict(labels) or "host" in dict(labels) for _, labels in samples)

    promtool = shutil.which("promtool")
    if promtool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read()
        checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
