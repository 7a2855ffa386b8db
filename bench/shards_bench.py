"""Many hosts and shards: delivered/s and worker CPU per callback to 8 targets, by shards and processes.

8 ``host:port`` targets: one receiver process on 8 ports picked with :func:`shard_of` so that 4 shards get 2 hosts
each (one event loop, as the other benchmarks' receiver: the box has 2 cores). A fresh worker per configuration;
a run is one ``enqueue_many`` evenly over the hosts. Alone: ``python -m bench --only shards --output -``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pika
import uvloop
from aiohttp import web

from testkit.cluster import PrivateCluster, cluster_tools
from testkit.receiver import Receiver
from worker.config.parsers import signing_key
from worker.delivery import signing
from worker.streams.client import sync_client
from worker.streams.shards import shard_of

from . import harness, raw_client, receiver_server, workload
from .memory_bench import leader_pids, worker_pids, writer_pid
from .profiles import UNPACED
from .report import markdown_table

HOSTS, CALLBACKS, ROUNDS, WARM_UP = 8, 4000, 2, 200
RUN_TIMEOUT = 60.0  # seconds one run may take; what has not arrived by then counts as a shortfall
SPREAD_WAIT = 20.0  # seconds a fresh worker may take to lead every shard, spread over its processes
CONFIGS = ((1, 1), (1, 2), (2, 2), (4, 2))  # (shards, worker processes) on one Redis
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


class PortsReceiver(harness.ReceiverProcess):
    """``bench.receiver_server``'s app in one process, listening on several ports of 127.0.0.1."""

    def __init__(self, ports: Sequence[int]) -> None:
        self.port, self.urls = ports[0], [f"http://127.0.0.1:{port}" for port in ports]
        listen = ",".join(map(str, ports))
        harness.Subprocess.__init__(self, f"receiver-{len(ports)}-ports", [sys.executable, "-m", __name__, listen])
        self.url = self.urls[0]  # where /_times is asked: the ports share one record
        if not harness.wait_until(self._answers, 15, 0.05):
            self.stop()
            raise RuntimeError(f"receiver on ports {listen} did not start:\n{self.tail()}")


class _ChosenProcesses(harness.DramatiqProcess):
    """Starts ``self.processes`` processes, whatever its caller asks (``CallbackWorker`` always asks two)."""

    processes: int

    def __init__(self, module: str, env: Mapping[str, str], *, processes: int = 1, threads: int = 2) -> None:
        super().__init__(module, env, processes=self.processes, threads=threads)


class ShardWorker(harness.CallbackWorker, _ChosenProcesses):
    """A :class:`CallbackWorker` of ``processes`` processes."""

    def __init__(self, redis_url: str, namespace: str, settings: Mapping[str, object], processes: int) -> None:
        self.processes = processes
        super().__init__(redis_url, namespace, settings)


def balanced_ports(hosts: int = HOSTS, shards: int = 4) -> list[int]:
    """``hosts`` free ports whose ``127.0.0.1:port`` fall evenly into ``shards`` shards, shard by shard in turn."""
    chosen: list[list[int]] = [[] for _ in range(shards)]
    for _ in range(hosts * 200):
        port = harness.free_port()
        group = chosen[shard_of(f"http://127.0.0.1:{port}/", shards)]
        if len(group) < hosts // shards and all(port not in taken for taken in chosen):
            group.append(port)
        if sum(map(len, chosen)) == hosts:
            return [port for turn in zip(*chosen, strict=True) for port in turn]
    raise RuntimeError(f"no {hosts} free ports spread evenly over {shards} shards")


def spread(worker: ShardWorker, client: Any, shards: int) -> tuple[str, bool]:
    """Shards led per worker process, ``w`` where the status writer is (``"2w+2"``), and whether that is settled:
    every shard led, evenly, and the writer in a process that leads the fewest (where it moves to)."""
    led, writer = Counter(leader_pids(worker, client, shards)), writer_pid(worker, client)
    procs = sorted(((led[pid], pid == writer) for pid in worker_pids(worker, client)), reverse=True) or [(0, False)]
    fewest = procs[-1][0]
    even = len(procs) == worker.processes and sum(n for n, _ in procs) == shards and procs[0][0] - fewest <= 1
    return "+".join(f"{n}{'w' * writes}" for n, writes in procs), even and (fewest, True) in procs


@dataclass
class Row:
    """One configuration's runs: rates, CPU seconds per callback, spreads, shortfall."""

    name: str
    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    spreads: list[str] = field(default_factory=list)
    shortfall: int = 0

    def add(self, started: float, times: list[float], cpu: float, count: int) -> None:
        """Record a run that started at ``started`` (epoch s), from its arrival times and CPU seconds."""
        arrived = min(len(times), count)
        self.shortfall += count - arrived
        self.rates.append(arrived / max(max(times) - started, 1e-6) if times else 0.0)
        self.cpu.append(cpu / max(arrived, 1))


def measure_worker(row: Row, receiver: PortsReceiver, worker: ShardWorker, client: Any, shards: int) -> None:
    """Wait until ``worker``'s leases settle (:func:`spread`); warm it up, then time ``ROUNDS`` runs."""
    worker.wait_ready(client)
    for _ in range(2):  # even, and even again 1.5 s later: not in the middle of a handover (about 1 s)
        harness.wait_until(lambda: spread(worker, client, shards)[1], SPREAD_WAIT, 0.2)
        time.sleep(1.5)
    with contextlib.closing(worker.producer()) as producer:
        for label, count in [("warm", WARM_UP), *((str(n), CALLBACKS) for n in range(ROUNDS))]:
            path = f"/run/{worker.keys.namespace}-{label}"
            urls = itertools.cycle(url + path for url in receiver.urls)
            requests = [workload.requests(next(urls), 1, n)[0] for n in range(count)]
            before, cpu = spread(worker, client, shards)[0], harness.cpu_seconds(worker.proc.pid)
            started = time.time()
            producer.enqueue_many(requests)
            times = receiver.wait_for(path, count, RUN_TIMEOUT)
            cpu = harness.cpu_seconds(worker.proc.pid) - cpu
            worker.check()
            if label != "warm":
                row.add(started, times, cpu, count)
                after = spread(worker, client, shards)[0]
                row.spreads.append(before if after == before else f"{before} then {after}")


async def _lane(session: aiohttp.ClientSession, work: Iterator[tuple[str, tuple[str, str]]]) -> None:
    key = signing_key(harness.SECRET)
    for url, (callback_id, body) in work:  # the lanes share one iterator: each takes the next callback
        data = body.encode()
        headers = signing.headers(key, callback_id, int(time.time()), data)
        async with session.post(url, data=data, headers=headers) as response:
            await response.read()


async def _raw_rounds(urls: Sequence[str]) -> list[tuple[str, float, float]]:
    """A warm-up, then ``ROUNDS`` runs on the same 64 connections: (path, start, CPU seconds) of each run."""
    runs = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=raw_client.CONCURRENCY)) as session:
        for label, count in [("warm", WARM_UP), *((str(n), CALLBACKS) for n in range(ROUNDS))]:
            path = f"/run/raw-{label}"
            work = zip(itertools.cycle(url + path for url in urls), workload.bodies(count))
            cpu, started = time.process_time(), time.time()
            await asyncio.gather(*(_lane(session, work) for _ in range(raw_client.CONCURRENCY)))
            runs.append((path, started, time.process_time() - cpu))
    return runs[1:]


def cluster_problem() -> str | None:
    """Why the Redis Cluster row cannot run here, or ``None``."""
    if not cluster_tools():
        return "redis-server or redis-cli is not on PATH"
    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
    except pika.exceptions.AMQPError as e:
        return f"RabbitMQ does not answer at 127.0.0.1:5672 ({type(e).__name__})"
    return None


@contextlib.contextmanager
def private_cluster(namespace: str) -> Iterator[PrivateCluster]:
    """A private 3-master Redis Cluster in a scratch directory; the namespace's RabbitMQ queues deleted after."""
    try:
        with tempfile.TemporaryDirectory(prefix="cbw-cluster-") as directory, PrivateCluster(Path(directory)) as nodes:
            yield nodes
    finally:
        with contextlib.closing(pika.BlockingConnection(pika.URLParameters(AMQP_URL))) as connection:
            channel = connection.channel()
            for name, suffix in itertools.product(("leader", "status", "images"), ("", ".DQ", ".XQ")):
                channel.queue_delete(f"{name}.{namespace}{suffix}")


def run(step: Callable[[str], None] = lambda what: None) -> tuple[str, str]:
    """Measure the baseline and every configuration; the section's title and Markdown."""
    rows, notes = [Row("raw aiohttp (64 connections, uvloop)")], []
    with PortsReceiver(balanced_ports()) as receiver, harness.PrivateRedis() as redis:
        step("shards: raw aiohttp baseline to 8 hosts")  # as raw_client.post_all, over every host
        for path, started, cpu in uvloop.run(_raw_rounds(receiver.urls)):
            rows[0].add(started, receiver.wait_for(path, CALLBACKS, RUN_TIMEOUT), cpu, CALLBACKS)
        for shards, processes in CONFIGS:
            step(f"shards: {shards} shard(s), {processes} process(es), one Redis")
            rows.append(Row(f"{shards} shard(s), {processes} process(es), Redis"))
            settings = {**UNPACED, "CALLBACK_SHARDS": shards}
            with ShardWorker(redis.url, f"bench-shards-{shards}-{processes}", settings, processes) as worker:
                measure_worker(rows[-1], receiver, worker, redis.client, shards)
        if problem := cluster_problem():
            notes.append(f"Redis Cluster row skipped: {problem}.")
            return "Many hosts and shards", table(rows, notes)
        step("shards: 4 shards, 2 processes, 3-master Redis Cluster, Dramatiq on RabbitMQ")
        rows.append(Row("4 shard(s), 2 process(es), Redis Cluster (3 masters) + RabbitMQ"))
        namespace = f"bench-shards-cluster-{os.getpid()}"
        settings = {**UNPACED, "CALLBACK_SHARDS": 4, "DRAMATIQ_BROKER_URL": AMQP_URL}
        with (
            private_cluster(namespace) as cluster,
            ShardWorker(cluster.url, namespace, settings, 2) as worker,
            contextlib.closing(sync_client(cluster.url)) as client,
        ):
            measure_worker(rows[-1], receiver, worker, client, 4)
    return "Many hosts and shards", table(rows, notes)


def table(rows: list[Row], notes: list[str]) -> str:
    """The rows as Markdown with ratios against the first (the raw client), then the notes."""
    raw_rate, raw_cpu = statistics.median(rows[0].rates), statistics.median(rows[0].cpu)
    lines = []
    for row in rows:
        rate, cpu = statistics.median(row.rates), statistics.median(row.cpu)
        runs = "/".join(f"{value:,.0f}" for value in row.rates)
        cells = [f"{rate:,.0f}/s ({runs})", f"{rate / raw_rate:.2f}x", f"{cpu * 1e6:,.0f}", f"{cpu / raw_cpu:.2f}x"]
        lines.append([row.name, *cells, ", ".join(dict.fromkeys(row.spreads)) or "-"])
        if row.shortfall:
            notes.append(f"{row.name}: {row.shortfall} callbacks did not arrive within {RUN_TIMEOUT:g} s.")
    headers = ["configuration", "delivered/s (runs)", "vs raw", "CPU µs/callback", "vs raw CPU", "shards led"]
    setup = (
        f"{CALLBACKS:,} callbacks a run, evenly over {HOSTS} `host:port` targets (one receiver process, {HOSTS} "
        f"ports); median of {ROUNDS} runs after a {WARM_UP}-callback warm-up. Rate: enqueue (raw: first POST) to "
        "last arrival. CPU: the worker's process tree (raw: this process). Unpaced profile, 3 threads a process. "
        "Shards led per process: each shard's `leader:info` holder (w: that process holds the status writer's "
        "lease too), before and after each run."
    )
    why = (
        "Why shards do not multiply the rate here: the machine has 2 cores, shared by the receiver process, "
        "Redis and every worker process; one shard's leader already keeps about one core busy, so a second "
        "leader process competes for the same cores (and adds its own event loop, Redis round trips and "
        "status writes per callback, hence the higher CPU per callback). Shards spread the work; on a box "
        "with a core per leader (and the receivers elsewhere) they add capacity. One hot host stays in one "
        "shard: its ceiling is one leader's (leader CPU per callback ~2.2x the bare client's in "
        "`python -m bench.leader_profile`, no single hotspot)."
    )
    return "\n\n".join([setup, markdown_table(headers, lines), *notes, why])


async def _serve(ports: list[int]) -> None:
    runner = web.AppRunner(receiver_server.application(Receiver(None, record_bodies=False)), access_log=None)
    await runner.setup()
    for port in ports:
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    await asyncio.Event().wait()  # until SIGTERM ends the process


if __name__ == "__main__":  # the receiver process: python -m bench.shards_bench PORT,PORT,...
    asyncio.run(_serve([int(port) for port in sys.argv[1].split(",")]))
