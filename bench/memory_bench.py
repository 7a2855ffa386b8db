"""Memory with 100,000 queued: the peak RSS of every process of a real worker while a backlog waits.

The worker ``make run`` starts (2 processes, 4 threads, the shipped settings)
runs on a private Redis with a SQLite database in a scratch directory. 100,000
callbacks are enqueued (``enqueue_many``, 1,000 a call) to a receiver path that
answers after 200 ms (``/slow/200``), so with the shipped 8 in flight per host
they drain at about 40/s and the backlog stays. Every process's memory is
sampled every 0.5 s from just before the first enqueue until 30 s after the
last: the table gives each one's idle figure (the first sample), its peak, and
its ``VmHWM`` (the kernel's own peak) at the end. A process's role comes from
the fleet hash and the ``leader:info`` and ``writer:info`` holders. The floor:
a fresh interpreter that only imports ``worker.actors``, same environment.

Run alone: ``python -m bench --only memory --output -``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.streams.client import text
from worker.streams.lease import parse_holder

from . import workload
from .harness import ROOT, CallbackWorker, PrivateRedis, ReceiverProcess, wait_until
from .report import markdown_table

CALLBACKS, BATCH = 100_000, 1_000
SAMPLE_EVERY, AFTER = 0.5, 30.0  # seconds between samples; seconds sampled after the last enqueue
THREADS = 4  # `make run`'s THREADS (its PROCESSES is harness.WORKER_PROCESSES, 2)
TARGET_MB = 80.0
SLOW_PATH = "/slow/200"
SETTLE_WAIT = 15.0  # seconds the status writer may take to start in (or move to) a process other than the leader's


def child_pids(pid: int) -> list[int]:
    """The process ids of ``pid``'s children (of any of its threads)."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return sorted(int(child) for task in tasks for child in (task / "children").read_text().split())


def worker_pids(worker: CallbackWorker, client: Any) -> list[int]:
    """The worker's Dramatiq worker processes: its children in the fleet hash (not the /metrics fork)."""
    fleet = {text(name).rpartition(":")[2] for name in client.hkeys(worker.keys.fleet)}
    return [pid for pid in child_pids(worker.proc.pid) if str(pid) in fleet]


def leader_pids(worker: CallbackWorker, client: Any, shards: int) -> list[int]:
    """The process id of each shard's leader (its ``leader:info`` holder), 0 for a shard no one leads."""
    keys = worker.keys.shards(shards)
    holders = [parse_holder(client.hget(k.lease_info, "holder")) if client.exists(k.lease) else None for k in keys]
    return [holder.pid if holder else 0 for holder in holders]


def writer_pid(worker: CallbackWorker, client: Any) -> int:
    """The process id of the status writer (its ``writer:info`` holder), 0 if no one holds its lease."""
    holder = parse_holder(client.hget(worker.keys.writer_lease.info, "holder"))
    return holder.pid if holder and client.exists(worker.keys.status_lease) else 0


def roles(worker: CallbackWorker, client: Any) -> dict[int, str]:
    """Every process of ``worker`` by pid: what it is, and which leases it holds."""
    leaders, writer = set(leader_pids(worker, client, worker.settings.shards)), writer_pid(worker, client)
    found = {worker.proc.pid: "dramatiq main process"}
    workers = worker_pids(worker, client)
    for pid in child_pids(worker.proc.pid):
        duties = ["worker process"] + ["leader"] * (pid in leaders) + ["status writer"] * (pid == writer)
        found[pid] = " + ".join(duties) if pid in workers else "fork (/metrics server)"
    return found


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A ``/proc/<pid>/status`` memory figure in MB (1024 kB); ``nan`` once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as lines:
            return next(int(line.split()[1]) / 1024 for line in lines if line.startswith(f"{field}:"))
    except (OSError, StopIteration):
        return float("nan")


# The floor's steps, as module: label. "sys" is loaded already: its step is the bare interpreter.
IMPORT_STEPS = {
    "sys": "the interpreter",
    **{name: f"`{name}`" for name in ("redis", "aiohttp", "sqlalchemy")},
    "worker.actors": "the rest of `worker.actors`",
}


def import_floor(env: dict[str, str]) -> list[tuple[str, float, float]]:
    """(module, VmRSS MB, RssAnon MB) of a fresh interpreter after each of ``IMPORT_STEPS`` (``worker.actors`` last).

    The steps are cumulative: each adds what the module imports that earlier ones did not.
    """
    code = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "    fields = {line.split(':')[0]: line.split()[1:2] for line in open('/proc/self/status')}\n"
        "    print(name, *fields['VmRSS'], *fields['RssAnon'])"
    )
    argv = [sys.executable, "-c", code, *IMPORT_STEPS]
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **env}
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    steps = [line.split() for line in done.stdout.splitlines() if len(line.split()) == 3]
    return [(name, int(rss) / 1024, int(anon) / 1024) for name, rss, anon in steps]


class Sampler:
    """The peak ``VmRSS`` and ``RssAnon`` of each process of a worker, sampled at most every ``SAMPLE_EVERY`` s."""

    def __init__(self, worker: CallbackWorker) -> None:
        self.worker = worker
        self.peaks: dict[int, float] = {}
        self.anon: dict[int, float] = {}
        self.first: dict[int, float] = {}  # the first sample: idle, before the first enqueue
        self.samples, self.last = 0, 0.0

    def __call__(self) -> None:
        """Sample now if the last sample is ``SAMPLE_EVERY`` old."""
        if time.monotonic() - self.last < SAMPLE_EVERY:
            return
        self.last, self.samples = time.monotonic(), self.samples + 1
        for pid in [self.worker.proc.pid, *child_pids(self.worker.proc.pid)]:
            rss, anon = memory_mb(pid), memory_mb(pid, "RssAnon")
            if not math.isnan(rss):  # the process is still there
                self.first.setdefault(pid, rss)
                self.peaks[pid] = max(self.peaks.get(pid, 0.0), rss)
                self.anon[pid] = max(self.anon.get(pid, 0.0), anon)


def run(step: Callable[[str], None] = lambda what: None) -> tuple[str, str]:
    """Fill the queue, sample, and the section's title and Markdown."""
    with (
        PrivateRedis() as redis,
        ReceiverProcess() as receiver,
        CallbackWorker(redis.url, "bench-memory", {}, threads=THREADS) as worker,
    ):
        worker.wait_ready(redis.client)
        leaders = leader_pids(worker, redis.client, worker.settings.shards)
        wait_until(lambda: writer_pid(worker, redis.client) not in (0, *leaders), SETTLE_WAIT, 0.2)  # writer apart
        sample, producer = Sampler(worker), worker.producer()
        sample()
        step(f"memory: enqueueing {CALLBACKS:,} callbacks to {SLOW_PATH}")
        started = time.monotonic()
        try:
            for start in range(0, CALLBACKS, BATCH):
                producer.enqueue_many(workload.requests(receiver.url + SLOW_PATH, BATCH, start))
                sample()
        finally:
            producer.close()
        enqueue_s = time.monotonic() - started
        step(f"memory: sampling every process's RSS for {AFTER:g} s")
        deadline = time.monotonic() + AFTER
        while time.monotonic() < deadline:
            sample()
            time.sleep(SAMPLE_EVERY / 5)
            worker.check()
        found = roles(worker, redis.client)
        hwm = {pid: memory_mb(pid, "VmHWM") for pid in sample.peaks}
        queued = sum(int(redis.client.xlen(keys.stream)) for keys in worker.keys.shards(worker.settings.shards))
        delivered = worker.stat(redis.client, "delivered")
        floor = import_floor(worker.env)
    return "Memory with 100,000 queued", table(sample, found, hwm, floor, (enqueue_s, delivered, queued))


def table(
    sample: Sampler,
    found: dict[int, str],
    hwm: dict[int, float],
    floor: list[tuple[str, float, float]],
    counts: tuple[float, int, int],
) -> str:
    """The peaks as Markdown against the target, what was queued and delivered, and the import floor."""
    enqueue_s, delivered, queued = counts
    lines = []
    for pid, peak in sorted(sample.peaks.items()):
        verdict = "met" if peak <= TARGET_MB else f"**missed** by {peak - TARGET_MB:.1f} MB"
        cells = [f"{sample.first[pid]:.1f}", f"{peak:.1f}", f"{sample.anon[pid]:.1f}", f"{hwm[pid]:.1f}", verdict]
        lines.append([found.get(pid, "exited"), str(pid), *cells])
    if floor:
        name, rss, anon = floor[-1]
        lines.append(
            [f"floor: a fresh interpreter after `import {name}`", "-", "-", f"{rss:.1f}", f"{anon:.1f}", "-", "-"]
        )
    setup = (
        f"{CALLBACKS:,} callbacks enqueued in {enqueue_s:.1f} s ({BATCH:,} a call) to `{SLOW_PATH}`; "
        f"`make run`'s worker (2 processes, {THREADS} threads, shipped settings, SQLite). {sample.samples} samples "
        f"of every process's memory, every {SAMPLE_EVERY:g} s until {AFTER:g} s after the last enqueue; by then "
        f"{delivered:,} were delivered and {queued:,} still queued. Target: <= {TARGET_MB:g} MB a process. "
        "Figures in MB; idle: before the first enqueue. RssAnon is the process's own memory; VmRSS adds the "
        "pages of the files (shared libraries) it maps."
    )
    headers = ["process", "pid", "idle VmRSS", "peak VmRSS", "peak RssAnon", "VmHWM", f"peak <= {TARGET_MB:g} MB"]
    steps, before = [], 0.0
    for name, rss, _ in floor:
        steps.append(f"{IMPORT_STEPS.get(name, name)} +{rss - before:.1f}")
        before = rss
    where = f"Where the floor goes (VmRSS MB, cumulative imports): {', '.join(steps)} = {before:.1f} MB."
    total = f"All processes together: {sum(sample.peaks.values()):.1f} MB at peak."
    return "\n\n".join([setup, markdown_table(headers, lines), total, where])
