"""Turns one run's measurements into table rows with targets, and explains each miss from the run's own numbers."""

from __future__ import annotations

from dataclasses import dataclass

from redis.utils import HIREDIS_AVAILABLE

from worker.config.settings import Settings
from worker.engine.intake import DEFER_SECONDS

from .enqueue_rate import EnqueueRates
from .latency import LatencyRun
from .pacing import PacingRun
from .report import Row, Target, millis, per_second, plain
from .throughput import ThroughputResult


@dataclass(frozen=True)
class Figures:
    """Everything one ``python -m bench`` run measured."""

    throughput: ThroughputResult
    idle: LatencyRun
    burst: LatencyRun
    burst_deferred: int
    paced: PacingRun
    enqueue: EnqueueRates
    unpaced: Settings  # the headline worker's settings
    load: float  # 1-minute load average when the run started


def rows(f: Figures) -> list[Row]:
    """The figures table, in the order of the issue."""
    return [*_throughput(f), *_latency(f), *_pacing(f), *_enqueue(f), *_commands(f)]


def shedding(deferred: float, settings: Settings, what: str) -> str:
    """Why ``deferred`` entries were deferred (``what``: "per run", "in the run"); empty when none were."""
    if not deferred:
        return ""
    later = f"{DEFER_SECONDS:g} s later"
    return (
        f"The worker deferred {deferred:,.0f} entries {what}. The leader hands an entry back to the delayed set "
        f"when its host has all {settings.host_concurrency} slots in flight and more waiting than its share of the "
        "leader's read-ahead (the whole of it while that host is the only one waiting), or when it has waited "
        f"{settings.claim_idle / 3:g} s in memory (worker/engine/hosts.py `HostQueues.offer`/`shed`, "
        f"worker/engine/intake.py `Intake.shed`/`_defer`); it comes back {later} through promote.lua and is read "
        "again."
    )


def _throughput(f: Figures) -> list[Row]:
    t = f.throughput
    ours, raw, dramatiq = t.ours.series, t.raw.series, t.dramatiq.series
    times = f" ({ours.cpu_us / raw.cpu_us:.1f} times as much)" if raw.cpu_us > 0 else ""
    cpu = (
        f"The worker's processes used {ours.cpu_us:.0f} µs of CPU per callback against {raw.cpu_us:.0f} µs for the "
        f"bare client{times}, {ours.cpu_us * ours.rate / 1e6:.0%} of one core while delivering; its Redis server "
        f"{ours.redis_cpu_us:.0f} µs per callback. That CPU is two Python processes': the leader (event loop, "
        "aiohttp client, Redis replies, pacing and per-host bookkeeping, signing, status updates), which delivers "
        "every callback on one event loop and one GIL, and the status writer (decoding, validating and merging "
        "the status updates of each callback, then SQLite), which the bare client does not do at all. Delivering "
        "from more than one process (the leader paces, several processes send) is the way past this. "
        f"{_core_needed(ours.cpu_us, raw.rate)}The receiver spent "
        f"{ours.receiver_cpu_us:.0f} µs per callback on our run and {raw.receiver_cpu_us:.0f} µs on the bare "
        "client's, on the same 2 cores."
    )
    if not HIREDIS_AVAILABLE:
        cpu += (
            " The worker's Redis client parses every reply in Python (hiredis is not installed), an element for each "
            "field name and value of every entry it reads."
        )
    return [
        Row(
            "Unpaced throughput vs raw aiohttp",
            ours.rate,
            per_second,
            raw.rate,
            "aiohttp x64",
            Target(0.8, True, True),
            f"{shedding(ours.deferrals, f.unpaced, 'per run')} {cpu}".strip(),
        ),
        Row("Unpaced throughput vs plain Dramatiq", ours.rate, per_second, dramatiq.rate, "actor/callback"),
        Row("Entries deferred per unpaced run", ours.deferrals, plain),
    ]


def _core_needed(cpu_us: float, rate: float) -> str:
    """What matching ``rate`` would take at ``cpu_us`` per callback, in one core's terms (empty without figures)."""
    need = cpu_us * rate / 1e6
    if not need > 0:  # also NaN
        return ""
    beyond = ", more than one Python process (one event loop, one GIL) can give" if need >= 1 else ""
    return f"At that cost the bare client's {rate:,.0f}/s would take {need:.0%} of one core{beyond}. "


def _latency(f: Figures) -> list[Row]:
    noise = (
        f" The 1-minute load average was {f.load:.2f} at the start on 2 cores shared with other work; "
        "a tail this size is one scheduling delay of the worker, the receiver or Redis."
    )
    path = "An idle leader wakes from XREADGROUP BLOCK, reserves a slot (one EVALSHA) and POSTs."
    return [
        Row(
            f"Idle latency p50 ({len(f.idle.latencies)} single enqueues)",
            f.idle.ms(50),
            millis,
            target=Target(5, False),
            why=path + noise,
        ),
        Row("Idle latency p99", f.idle.ms(99), millis, target=Target(20, False), why=path + noise),
        Row(f"Burst latency p50 ({f.burst.sent} in one enqueue_many)", f.burst.ms(50), millis),
        Row("Burst latency p99", f.burst.ms(99), millis),
        Row("Burst delivery rate", f.burst.rate, per_second),
    ]


def _pacing(f: Figures) -> list[Row]:
    paced = f.paced
    bunching = (
        f"Slots are {1000 / paced.rate:.1f} ms apart on the Redis clock, but each start waits in asyncio.sleep for its "
        "slot; a late wake-up starts the overdue deliveries back to back and their arrivals bunch."
    )
    slow = shedding(paced.deferred, paced.settings, "in the run") or bunching
    if paced.delivered < paced.sent:
        slow = f"Only {paced.delivered} of {paced.sent} arrived in time. {slow}"
    return [
        Row(
            f"Paced max callbacks in any 1 s ({paced.sent} at {paced.rate:g}/s)",
            paced.max_window,
            plain,
            target=Target(paced.rate * 1.02, False),
            why=bunching,
        ),
        Row("Paced mean rate", paced.mean_rate, per_second, target=Target(paced.rate * 0.98, True), why=slow),
    ]


def _enqueue(f: Figures) -> list[Row]:
    e = f.enqueue
    total_us, build_us = 1e6 / e.batched, 1e6 / e.built
    packer = "hiredis" if HIREDIS_AVAILABLE else "redis-py's pure-Python packer (hiredis is not installed)"
    why = (
        f"{total_us:.0f} µs per callback: {build_us:.0f} µs validating the URL, "
        f"encoding the JSON and building the entry, and {total_us - build_us:.0f} µs building the arguments of the one "
        f"enqueue.lua call per batch ({e.xadd_args} per entry), packing them with {packer}, and Redis adding the "
        "entries. What is left is per-entry Python; fewer fields per entry (one packed field) is the next step."
    )
    return [
        Row("Enqueue rate, single enqueue()", e.single, per_second),
        Row(
            f"Enqueue rate, enqueue_many() of {e.batch_size}",
            e.batched,
            per_second,
            e.single,
            "single",
            Target(50_000, True),
            why,
        ),
    ]


def _commands(f: Figures) -> list[Row]:
    ours, dramatiq = f.throughput.ours.commands, f.throughput.dramatiq.commands
    top = ", ".join(f"{name} {share:.2f}" for name, share in ours.breakdown()[:6])
    why = f"Per callback: {top}. A delivered callback costs an XACK and an XDEL inside settle.lua."
    deferrals = f.throughput.ours.series.deferrals
    if deferrals:
        why += (
            f" The worker deferred {deferrals:,.0f} entries per run, and every deferral adds a ZADD, XACK and XDEL "
            "(settle.lua), then a ZREM and XADD (promote.lua) and another read."
        )
    return [
        Row("Redis commands/callback, worker", ours.per_callback(ours.worker), plain, target=Target(3, False), why=why),
        Row("Redis commands/callback, producer", ours.per_callback(ours.producer), plain),
        Row(
            "Redis commands/callback, all",
            ours.per_callback(ours.total),
            plain,
            dramatiq.per_callback(dramatiq.total),
            "plain Dramatiq",
        ),
    ]
