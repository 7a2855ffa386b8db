"""Unpaced throughput: this worker vs a plain Dramatiq actor per callback vs a bare aiohttp client.

Each contender delivers the same N callbacks to the same receiver process.
A run is timed from the first enqueue (or POST) to the last arrival the
receiver recorded; rounds alternate the contenders so that noise from other
load on the machine falls on all of them alike, and the median is reported.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import dramatiq

from . import baseline_actor, raw_client, workload
from .commands import CommandTally, CommandWindow
from .harness import CallbackWorker, DramatiqProcess, PrivateRedis, ReceiverProcess, cpu_seconds

SETTLE_WAIT = 0.3  # after the last arrival, for the last acks to reach Redis
WARM_UP = 200


@dataclass
class Series:
    """The runs of one contender: delivery rates and CPU seconds per callback."""

    rates: list[float] = field(default_factory=list)
    sender_cpu: list[float] = field(default_factory=list)
    receiver_cpu: list[float] = field(default_factory=list)
    redis_cpu: list[float] = field(default_factory=list)  # the contender's Redis server, if it has one
    deferred: list[int] = field(default_factory=list)  # entries the worker parked instead of delivering, per run
    shortfall: int = 0  # callbacks that did not arrive within the time limit

    @property
    def rate(self) -> float:
        """Median callbacks per second."""
        return _median(self.rates)

    @property
    def cpu_us(self) -> float:
        """Median sender CPU microseconds per callback."""
        return _median(self.sender_cpu) * 1e6

    @property
    def receiver_cpu_us(self) -> float:
        """Median receiver CPU microseconds per callback."""
        return _median(self.receiver_cpu) * 1e6

    @property
    def redis_cpu_us(self) -> float:
        """Median Redis server CPU microseconds per callback."""
        return _median(self.redis_cpu) * 1e6

    @property
    def deferrals(self) -> float:
        """Median entries deferred per run."""
        return _median(self.deferred)


def _median(values: list[float] | list[int]) -> float:
    return float(statistics.median(values)) if values else float("nan")


@dataclass
class Contender:
    """One way of delivering callbacks, and how to watch it."""

    name: str
    prepare: Callable[[str, int], Callable[[], float]]  # (url, count) -> send(), which returns its start time
    sender_cpu: Callable[[], float]  # CPU seconds its sending process(es) used so far
    check: Callable[[], None] = lambda: None
    close: Callable[[], None] = lambda: None
    deferrals: Callable[[], int] = lambda: 0  # the worker's running count of deferred entries
    redis: PrivateRedis | None = None  # where its commands are counted
    series: Series = field(default_factory=Series)
    commands: CommandTally = field(default_factory=CommandTally)
    while_enqueueing: Counter[str] = field(default_factory=Counter)  # commands during the last send()


@dataclass
class ThroughputResult:
    """Every contender after its runs."""

    ours: Contender
    dramatiq: Contender
    raw: Contender

    @property
    def contenders(self) -> tuple[Contender, ...]:
        """In the order they take turns."""
        return (self.ours, self.dramatiq, self.raw)


class ThroughputBench:
    """Runs the three contenders against one receiver process."""

    def __init__(self, receiver: ReceiverProcess, count: int, timeout: float) -> None:
        self.receiver = receiver
        self.count = count
        self.timeout = timeout

    def run(self, result: ThroughputResult, rounds: int) -> ThroughputResult:
        """Warm every contender up, then let them take turns for ``rounds`` rounds."""
        for contender in result.contenders:
            self._measure(contender, "warm", WARM_UP, record=False)
        for index in range(rounds):
            for contender in result.contenders:
                self._measure(contender, str(index), self.count)
        for contender in result.contenders:
            contender.close()
        return result

    def _measure(self, contender: Contender, label: str, count: int, *, record: bool = True) -> None:
        path = f"/run/{contender.name}-{label}"
        send = contender.prepare(self.receiver.url + path, count)
        deferred = contender.deferrals()  # before the window opens: it is a Redis command of ours
        window = CommandWindow(contender.redis) if contender.redis else None
        redis_pid = contender.redis.proc.pid if contender.redis else None
        sender_cpu, receiver_cpu = contender.sender_cpu(), cpu_seconds(self.receiver.proc.pid)
        redis_cpu = cpu_seconds(redis_pid) if redis_pid else 0.0
        started = send()
        self.receiver.wait_for(path, count, self.timeout)
        sender_cpu = contender.sender_cpu() - sender_cpu
        receiver_cpu = cpu_seconds(self.receiver.proc.pid) - receiver_cpu
        redis_cpu = (cpu_seconds(redis_pid) - redis_cpu) if redis_pid else 0.0
        contender.check()
        times = self.receiver.times(path)
        if window is not None:
            time.sleep(SETTLE_WAIT)
            calls = window.close()
            if record:
                contender.commands.add(calls, len(times), contender.while_enqueueing)
        if not record:
            return
        series = contender.series
        series.deferred.append(contender.deferrals() - deferred)
        arrived = min(len(times), count)
        series.shortfall += count - arrived
        series.rates.append(arrived / max(max(times) - started, 1e-6) if times else 0.0)
        series.sender_cpu.append(sender_cpu / max(arrived, 1))
        series.receiver_cpu.append(receiver_cpu / max(arrived, 1))
        if redis_pid:
            series.redis_cpu.append(redis_cpu / max(arrived, 1))


def ours(name: str, worker: CallbackWorker, redis: PrivateRedis) -> Contender:
    """This worker: one ``enqueue_many`` of every callback, delivered by ``dramatiq worker.actors``."""
    producer = worker.producer()

    def prepare(url: str, count: int) -> Callable[[], float]:
        requests = workload.requests(url, count)

        def send() -> float:
            window = CommandWindow(redis)
            started = time.time()
            producer.enqueue_many(requests)
            contender.while_enqueueing = window.close()
            return started

        return send

    contender = Contender(
        name,
        prepare,
        lambda: cpu_seconds(worker.proc.pid),
        worker.check,
        producer.close,
        lambda: worker.stat(redis.client, "deferred"),
        redis,
    )
    return contender


def plain_dramatiq(process: DramatiqProcess, redis: PrivateRedis) -> Contender:
    """The baseline actor: one Dramatiq message per callback, sent one by one as an application would."""
    broker = baseline_actor.build_broker(redis.url)
    actor: dramatiq.Actor = baseline_actor.declare(broker)  # type: ignore[type-arg]

    def prepare(url: str, count: int) -> Callable[[], float]:
        messages = [actor.message(url, body, callback_id) for callback_id, body in workload.bodies(count)]

        def send() -> float:
            started = time.time()
            for message in messages:
                broker.enqueue(message)
            return started

        return send

    return Contender(
        "dramatiq", prepare, lambda: cpu_seconds(process.proc.pid), process.check, broker.close, redis=redis
    )


def raw_aiohttp(warm_url: str) -> Contender:
    """A bare aiohttp client in this process (its CPU figure includes a 64-request warm-up)."""

    def prepare(url: str, count: int) -> Callable[[], float]:
        items = workload.bodies(count)
        return lambda: raw_client.post_all(url, warm_url, items)

    return Contender("raw", prepare, time.process_time)
