"""Processes and numbers every benchmark shares: a private Redis, a receiver and worker subprocesses, percentiles.

Everything here listens on or talks to 127.0.0.1 only, and everything started
here is stopped by the same object (each is a context manager), so a run never
leaves a process behind.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

from worker.config.settings import Settings
from worker.producer import CallbackProducer
from worker.streams.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LOGS = Path(tempfile.gettempdir()) / "cbw-bench"
LOG_DIR = LOGS / str(os.getpid())  # this run's logs and scratch directories


WORKER_PROCESSES = 2  # what `make run` starts: the leader and the status writer keep to separate processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; ``nan`` for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


_serial = itertools.count(1)


def log_dir() -> Path:
    """This run's directory under ``LOGS``, made on first use; those of runs no longer alive are removed."""
    if not LOG_DIR.exists():
        LOG_DIR.mkdir(parents=True)
        for stale in LOGS.iterdir():
            if stale.name.isdigit() and stale != LOG_DIR and not Path(f"/proc/{stale.name}").exists():
                shutil.rmtree(stale, ignore_errors=True)
    return LOG_DIR


class Subprocess:
    """A child process in its own session, logging to a file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.log = log_dir() / f"{next(_serial):02d}-{name}.log"
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**_clean_environ(), "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def tail(self, lines: int = 20) -> str:
        """The last lines of its log, for error messages."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (graceful), then SIGKILL of its process group after ``grace`` seconds."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._out.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _clean_environ() -> dict[str, str]:
    # Worker settings of the caller's shell must not leak into a benchmark's processes.
    drop = ("CALLBACK_", "WORKER_NAMESPACE", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "dramatiq_")
    return {key: value for key, value in os.environ.items() if not key.startswith(drop)}


class PrivateRedis(Subprocess):
    """A ``redis-server`` of our own on a free port: nothing persisted, and only our traffic in its stats."""

    def __init__(self) -> None:
        self.port = free_port()
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        super().__init__(f"redis-{self.port}", [*argv, "--daemonize", "no"])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis.from_url(self.url, socket_timeout=10)
        if not wait_until(self._answers, 10, 0.05):
            self.stop()
            raise RuntimeError(f"redis-server on port {self.port} did not start:\n{self.tail()}")

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def command_calls(self) -> dict[str, int]:
        """``INFO commandstats`` as {command: calls} (commands run inside Lua scripts included)."""
        stats: dict[str, Any] = self.client.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}

    def stop(self, grace: float = 15.0) -> None:
        """Close our client and stop the server."""
        self.client.close()
        super().stop(grace)


class ReceiverProcess(Subprocess):
    """``bench.receiver_server`` in its own process (its own core), queried over HTTP."""

    def __init__(self) -> None:
        self.port = free_port()
        super().__init__(
            f"receiver-{self.port}", [sys.executable, "-m", "bench.receiver_server", "--port", str(self.port)]
        )
        self.url = f"http://127.0.0.1:{self.port}"
        if not wait_until(self._answers, 15, 0.05):
            self.stop()
            raise RuntimeError(f"receiver on port {self.port} did not start:\n{self.tail()}")

    def _answers(self) -> bool:
        try:
            self.times("/_probe")
            return True
        except OSError:
            return False

    def times(self, path: str) -> list[float]:
        """Arrival times (``time.time()`` in the receiver) of every POST to ``path``."""
        query = urllib.parse.quote(path)
        with urllib.request.urlopen(f"{self.url}/_times?path={query}", timeout=10) as response:
            return list(json.loads(response.read())["times"])

    def count(self, path: str) -> int:
        """How many POSTs to ``path`` arrived."""
        query = urllib.parse.quote(path)
        with urllib.request.urlopen(f"{self.url}/_times?path={query}&count=1", timeout=10) as response:
            return int(json.loads(response.read())["count"])

    def wait_for(self, path: str, count: int, timeout: float) -> list[float]:
        """Wait until ``count`` POSTs to ``path`` arrived; their arrival times (fewer on timeout)."""
        wait_until(lambda: self.count(path) >= count, timeout, 0.05)  # times come from the receiver: no hurry
        return self.times(path)


def worker_env(redis_url: str, namespace: str, **overrides: object) -> dict[str, str]:
    """Environment of a worker under test: loopback targets allowed, a fixed secret, no metrics port."""
    env = {
        "REDIS_URL": redis_url,
        "WORKER_NAMESPACE": namespace,
        "CALLBACK_ALLOW_PRIVATE": "1",
        "CALLBACK_SIGNING_SECRET": SECRET,
        "METRICS_PORT": "0",
    }
    env.update({key: str(value) for key, value in overrides.items()})
    return env


class DramatiqProcess(Subprocess):
    """A real ``dramatiq <module>`` command, as production runs it."""

    def __init__(self, module: str, env: Mapping[str, str], *, processes: int = 1, threads: int = 2) -> None:
        argv = [sys.executable, "-m", "dramatiq", module, "--processes", str(processes), "--threads", str(threads)]
        super().__init__(f"dramatiq-{module}", argv, env)

    def check(self) -> None:
        """Raise with its log when it exited early."""
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")


class CallbackWorker(DramatiqProcess):
    """The worker under test: ``dramatiq worker.actors`` on one namespace; ready once a leader holds the lease."""

    def __init__(self, redis_url: str, namespace: str, settings: Mapping[str, object], threads: int = 3) -> None:
        # Its database, metrics samples and media go to a scratch directory, not the project's ./var.
        self.scratch = Path(tempfile.mkdtemp(prefix=f"worker-{namespace}-", dir=log_dir()))
        (self.scratch / "metrics").mkdir()
        scratch = {
            "DATABASE_URL": f"sqlite:///{self.scratch / 'worker.db'}",
            "PROMETHEUS_MULTIPROC_DIR": str(self.scratch / "metrics"),
            "MEDIA_ROOT": str(self.scratch / "media"),
        }
        self.env = worker_env(redis_url, namespace, **scratch, **settings)
        self.keys = Keys(namespace)
        self.settings = Settings.from_env(self.env)
        super().__init__("worker.actors", self.env, processes=WORKER_PROCESSES, threads=threads)

    def wait_ready(self, client: redis.Redis, timeout: float = 30) -> None:
        """Wait until a leader leads the queue (the leader watch elects one within a second of boot)."""
        if not wait_until(lambda: not self.alive() or bool(client.exists(self.keys.lease)), timeout, 0.05):
            raise RuntimeError(f"no leader after {timeout:g} s:\n{self.tail()}")
        self.check()

    def stop(self, grace: float = 15.0) -> None:
        """Stop the worker and remove its scratch directory."""
        super().stop(grace)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def producer(self) -> CallbackProducer:
        """A producer for this worker's queue (the caller closes it)."""
        return CallbackProducer(self.settings)

    def stat(self, client: redis.Redis, name: str) -> int:
        """A counter of the queue's stats hash (``delivered``, ``retried``, ``deferred``, ``dead``)."""
        return int(client.hget(self.keys.stats, name) or 0)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by ``pid`` and its live descendants; 0 once it is gone."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue  # exited meanwhile
    return total
