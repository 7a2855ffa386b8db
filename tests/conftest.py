"""Shared fixtures: real Redis, a real local receiver, isolated namespaces, worker processes.

Tests never flush a server they did not start: each test gets its own
``WORKER_NAMESPACE`` and deletes only its own keys afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings

from testkit.receiver import Receiver
from worker.config.settings import Settings
from worker.streams.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# Fuzz tests: the same examples on every run (CI is deterministic), no example database, no deadline
# (examples talk to real Redis and real processes), fixtures shared across the examples of one test.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis; skipped locally if absent, a failure in CI."""
    if not _redis_up():
        if os.environ.get("CI"):
            pytest.fail(f"Redis does not answer at {REDIS_URL}")
        pytest.skip(f"Redis does not answer at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A unique namespace; every key under it is deleted after the test."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    for pattern in (f"{name}:*",):
        keys = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    client.close()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client with decoded responses."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def settings_env(namespace: str, redis_url: str, **overrides: Any) -> dict[str, str]:
    """Environment for a fast test worker: private targets allowed, short timeouts and retries."""
    env = {
        "REDIS_URL": redis_url,
        "WORKER_NAMESPACE": namespace,
        "CALLBACK_ALLOW_PRIVATE": "1",
        "CALLBACK_SIGNING_SECRET": SECRET,
        "CALLBACK_TIMEOUT": "2",
        "CALLBACK_CLAIM_IDLE": "7",
        "CALLBACK_LEASE_TTL": "2",
        "CALLBACK_RETRY_SCHEDULE": "0.05,0.1",
        "CALLBACK_MAX_DELAY": "0.1",
        "CALLBACK_BATCH_SIZE": "500",
        "CALLBACK_MIN_INTERVAL": "0.05",
        "CALLBACK_RATE": "10000",
        "CALLBACK_HOST_CONCURRENCY": "64",
        "METRICS_PORT": "0",
        # Off by default here: many tests run image tasks and a leader in-process without a status writer,
        # and a callback held for its commit would wait for ever there. tests/test_after_commit.py turns it on.
        "CALLBACK_AFTER_COMMIT": "0",
    }
    env.update({key: str(value) for key, value in overrides.items()})
    return env


@pytest.fixture
def make_settings(namespace: str, redis_url: str):
    """``make_settings(CALLBACK_RATE=200, ...)`` -> Settings for this test's namespace."""

    def make(**overrides: Any) -> Settings:
        return Settings.from_env(settings_env(namespace, redis_url, **overrides))

    return make


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real aiohttp receiver on 127.0.0.1 that verifies signatures with ``SECRET``."""
    server = Receiver(SECRET).start()
    yield server
    server.stop()


@pytest.fixture
def keys(namespace: str) -> Keys:
    return Keys(namespace)


def run_burst(settings: Settings, **kwargs: Any) -> Any:
    """Run a leader in this process until the queue is idle (burst mode)."""
    from worker.engine.term import lead

    return asyncio.run(asyncio.wait_for(lead(settings, burst=True, **kwargs), timeout=60))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkerProcess:
    """A real ``dramatiq worker.actors`` command, in its own process group."""

    def __init__(self, env: dict[str, str], processes: int = 1, threads: int = 2, log: Path | None = None) -> None:
        full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.log = log
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        self._out = out
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dramatiq",
                "worker.actors",
                "--processes",
                str(processes),
                "--threads",
                str(threads),
            ],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """kill -9 the whole process group (the dramatiq parent and its worker processes)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait for a graceful exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def stop(self) -> None:
        self.terminate()
        if hasattr(self._out, "close"):
            self._out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""


@pytest.fixture
def start_worker(namespace: str, redis_url: str, tmp_path: Path):
    """``start_worker(**env_overrides)`` -> a running WorkerProcess, stopped after the test."""
    started: list[WorkerProcess] = []

    def start(processes: int = 1, threads: int = 2, **overrides: Any) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(settings_env(namespace, redis_url, **overrides), processes, threads, log)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def recorded_updates(rclient: redis.Redis, keys: Keys) -> list[Any]:
    """Every status update in the status stream, decoded as the writer decodes them (none may be malformed)."""
    from worker.storage.merge import check
    from worker.streams.status import decode

    updates = []
    for _, fields in rclient.xrange(keys.status_updates):
        entry = decode(fields, check)
        assert entry.rejected == [], entry.rejected
        updates.extend(entry.updates)
    return updates


def run_python(*argv: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python <argv>`` from the project root with ``env`` on top of this process's (output captured)."""
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )


def ops_in_process(namespace: str, redis_url: str, monkeypatch: Any, capsys: Any, **defaults: str) -> Any:
    """``run(*argv, **env_overrides)`` -> (exit code, stdout, stderr) of ``python -m ops`` run in this process."""
    from ops.__main__ import main

    def run(*argv: str, **overrides: str) -> tuple[int, str, str]:
        for name, value in settings_env(namespace, redis_url, **{**defaults, **overrides}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = main(list(argv))
        return (code, *capsys.readouterr())

    return run


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Any]:
    """A redis-server of the test's own (append-only file, so a restart keeps the data), stopped after."""
    from testkit.servers import PrivateRedis, redis_server

    if redis_server() is None:
        pytest.skip("redis-server is not on PATH")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
RABBITMQ_QUEUES = ("leader", "status", "images")


@pytest.fixture
def rabbitmq(namespace: str) -> Iterator[str]:
    """The machine's RabbitMQ; skipped locally if absent, a failure in CI. Deletes the namespace's queues after."""
    import pika

    try:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except pika.exceptions.AMQPError as e:
        if os.environ.get("CI"):
            pytest.fail(f"RabbitMQ does not answer at 127.0.0.1:5672 ({type(e).__name__})")
        pytest.skip("RabbitMQ does not answer at 127.0.0.1:5672")
    yield AMQP_URL
    channel = connection.channel()
    for name in RABBITMQ_QUEUES:
        for suffix in ("", ".DQ", ".XQ"):
            channel.queue_delete(f"{name}.{namespace}{suffix}")
    connection.close()
