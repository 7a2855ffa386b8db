"""The report's supporting sections: how it was measured, the settings, CPU use and the Redis command mix."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
from pathlib import Path

from .figures import Figures
from .harness import WORKER_PROCESSES
from .profiles import PACED, UNPACED, describe
from .report import markdown_table
from .throughput import Contender


def machine() -> str:
    """One line: cores, CPU model, OS, Python and Redis versions."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line), ""
        )
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
    redis_version = next((part.removeprefix("v=") for part in redis_version.split() if part.startswith("v=")), "?")
    return (
        f"nproc {os.cpu_count()}, {model or platform.machine()}, {platform.system()} {platform.release()}, "
        f"Python {sys.version.split()[0]}, Redis {redis_version}"
    )


def sections(f: Figures, callbacks: int, rounds: int, dramatiq_threads: int) -> list[tuple[str, str]]:
    """(heading, Markdown body) of every supporting section."""
    return [
        ("How it was measured", _method(f, callbacks, rounds, dramatiq_threads)),
        ("Settings", _settings()),
        ("CPU per callback (unpaced runs, medians)", _cpu(f)),
        ("Redis commands per delivered callback", _commands(f)),
    ]


def _method(f: Figures, callbacks: int, rounds: int, dramatiq_threads: int) -> str:
    baseline_cmd = f"dramatiq bench.baseline_actor --processes {WORKER_PROCESSES} --threads {dramatiq_threads}"
    return "\n".join(
        [
            "- Every Redis is a private `redis-server` on a free port started by the run, so `INFO commandstats` "
            "counts only benchmark traffic; everything talks to 127.0.0.1.",
            f"- Throughput: {callbacks} callbacks per run, {rounds} rounds alternating the contenders, median "
            "reported; timed from the first enqueue/POST to the last arrival at one receiver process "
            "(`python -m bench.receiver_server`, the project's receiver without signature checks).",
            "  - ours: one `enqueue_many`, delivered by "
            f"`dramatiq worker.actors --processes {WORKER_PROCESSES} --threads 3`;",
            "  - plain Dramatiq: one message per callback sent one by one, an async actor posting with aiohttp "
            f"(`{baseline_cmd}`), same body and signature;",
            "  - raw aiohttp: 64 concurrent POSTs from the benchmark process, after opening its connections.",
            "- Latency: the project's receiver runs in the benchmark process (it verifies every signature with the "
            "public `standardwebhooks` library) and the worker in its own; enqueue time is taken just before the "
            f"producer call. Idle: {f.idle.sent} single enqueues 20 ms apart ({f.idle.verified} signatures "
            f"verified). Burst: {f.burst.sent} in one `enqueue_many` ({f.burst.verified} verified, "
            f"{f.burst_deferred} deferred by the worker).",
            f"- Pacing: a backlog of {f.paced.sent} in one `enqueue_many` at {f.paced.rate:g}/s; the 1 s windows "
            "slide over the arrival times the receiver process recorded "
            f"({f.paced.delivered} arrived, {f.paced.deferred} deferred).",
            f"- Load average when the run started: {f.load:.2f} (the machine is shared; figures are noisy).",
        ]
    )


def _settings() -> str:
    lines = [
        ["throughput, latency, burst, commands (the tests' fast profile)", describe(UNPACED)],
        ["pacing (the shipped pacing defaults)", describe(PACED)],
    ]
    note = (
        "Every worker also gets CALLBACK_ALLOW_PRIVATE=1, a fixed CALLBACK_SIGNING_SECRET and METRICS_PORT=0; "
        "everything else is the default."
    )
    return markdown_table(["scenario", "worker settings"], lines) + "\n\n" + note


def _cpu(f: Figures) -> str:
    t = f.throughput

    def line(name: str, contender: Contender) -> list[str]:
        s = contender.series
        short = f" ({s.shortfall} missing)" if s.shortfall else ""
        return [
            name,
            f"{s.rate:,.0f}/s{short}",
            f"{s.cpu_us:.0f} µs",
            f"{s.cpu_us * s.rate / 1e6:.0%}",
            f"{s.receiver_cpu_us:.0f} µs",
            "-" if math.isnan(s.redis_cpu_us) else f"{s.redis_cpu_us:.0f} µs",
        ]

    lines = [
        line("ours", t.ours),
        line("plain Dramatiq", t.dramatiq),
        line("raw aiohttp", t.raw),
    ]
    headers = ["contender", "rate", "sender CPU/callback", "sender busy (of 1 core)", "receiver CPU/callback", "Redis"]
    note = (
        "Sender: the worker's processes (ours, plain Dramatiq) or the benchmark process (raw aiohttp, including its "
        "64-request warm-up); the producer's enqueueing runs in the benchmark process and is not included. All of "
        "them share 2 cores."
    )
    return markdown_table(headers, lines) + "\n\n" + note


def _commands(f: Figures) -> str:
    t = f.throughput
    ours, dramatiq = tallies = (t.ours.commands, t.dramatiq.commands)
    mixes = [dict(tally.breakdown()) for tally in tallies]
    names = sorted({name for mix in mixes for name in mix}, key=lambda name: -sum(mix.get(name, 0) for mix in mixes))
    shown = [name for name in names if max(mix.get(name, 0.0) for mix in mixes) >= 0.01]
    lines = [[name, *(f"{mix.get(name, 0.0):.3f}" for mix in mixes)] for name in shown]
    rest = [sum(share for name, share in mix.items() if name not in shown) for mix in mixes]
    lines.append(["(all others)", *(f"{share:.3f}" for share in rest)])
    lines.append(["**producer**", f"{ours.per_callback(ours.producer):.3f}", "-"])
    lines.append(["**worker**", f"{ours.per_callback(ours.worker):.3f}", "-"])
    lines.append(["**total**", f"{ours.per_callback(ours.total):.3f}", f"{dramatiq.per_callback(dramatiq.total):.3f}"])
    note = (
        "`INFO commandstats` counts commands run inside Lua scripts as well as the EVALSHA that ran them, so these "
        "are commands executed, not round trips. Ours: the producer's share is the XADD/MULTI/EXEC run during "
        "`enqueue_many`, the worker's everything else (its Dramatiq broker included). Plain Dramatiq: producer and "
        "worker together."
    )
    headers = ["command", "ours", "plain Dramatiq"]
    return markdown_table(headers, lines) + "\n\n" + note
