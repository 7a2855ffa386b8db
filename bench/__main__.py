"""``make bench``: every figure of the callback worker in one run, with baselines, ratios and targets.

Starts private Redis servers, a receiver process and real ``dramatiq``
workers, measures, prints the table and writes it to ``BENCHMARKS.md``.
Everything it starts it stops; every wait is bounded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from testkit.receiver import Receiver

from . import (
    adaptive_bench,
    details,
    enqueue_rate,
    image_bench,
    latency,
    memory_bench,
    pacing,
    shards_bench,
    status_bench,
)
from .figures import Figures, rows
from .harness import ROOT, SECRET, WORKER_PROCESSES, CallbackWorker, DramatiqProcess, PrivateRedis, ReceiverProcess
from .profiles import PACED, UNPACED
from .report import markdown, markdown_table, text_table
from .throughput import ThroughputBench, ThroughputResult, ours, plain_dramatiq, raw_aiohttp

RUN_TIMEOUT = 30.0  # seconds one throughput or burst run may take before it counts as short
PACED_BACKLOG = 1200


class Progress:
    """Prints what is being measured, with the seconds since the start, to stderr."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, what: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f}s] {what}", file=sys.stderr, flush=True)


def measure(args: argparse.Namespace, step: Progress) -> Figures:
    """Run every scenario and return the figures."""
    load = os.getloadavg()[0]
    with ExitStack() as stack:
        worker_redis, baseline_redis = (stack.enter_context(PrivateRedis()) for _ in range(2))
        receiver = stack.enter_context(ReceiverProcess())
        local = Receiver(SECRET).start()
        stack.callback(local.stop)

        step("enqueue rate (no worker running)")
        enqueue = enqueue_rate.measure(worker_redis.url, "bench-enqueue", args.singles, 50, 1000)

        step("starting the worker and the plain Dramatiq baseline")
        worker = stack.enter_context(CallbackWorker(worker_redis.url, "bench", UNPACED))
        baseline_env = {"BENCH_REDIS_URL": baseline_redis.url}
        baseline = stack.enter_context(
            DramatiqProcess(
                "bench.baseline_actor", baseline_env, processes=WORKER_PROCESSES, threads=args.dramatiq_threads
            )
        )
        worker.wait_ready(worker_redis.client)
        step(f"throughput: {args.rounds} rounds of {args.callbacks} callbacks x 3 contenders")
        contenders = ThroughputResult(
            ours("ours", worker, worker_redis),
            plain_dramatiq(baseline, baseline_redis),
            raw_aiohttp(receiver.url + "/run/raw-connect"),
        )
        throughput = ThroughputBench(receiver, args.callbacks, RUN_TIMEOUT).run(contenders, args.rounds)
        baseline.stop()

        step("idle latency and burst latency")
        producer = worker.producer()
        idle = latency.idle(producer, local, args.idle, spacing=0.02, timeout=10)
        deferred = worker.stat(worker_redis.client, "deferred")
        burst = latency.burst(producer, local, args.callbacks, timeout=RUN_TIMEOUT)
        burst_deferred = worker.stat(worker_redis.client, "deferred") - deferred
        producer.close()
        worker.stop()

        step(f"pacing: {PACED_BACKLOG} callbacks at {PACED['CALLBACK_RATE']}/s")
        with CallbackWorker(worker_redis.url, "bench-paced", PACED) as paced_worker:
            paced_worker.wait_ready(worker_redis.client)
            paced = pacing.backlog(paced_worker, worker_redis.client, receiver, PACED_BACKLOG, timeout=20)
        step("stopping")
    return Figures(throughput, idle, burst, burst_deferred, paced, enqueue, worker.settings, load)


def status_writer_section() -> tuple[str, str]:
    """The status writer's figures (``bench.status_bench``) as a report section."""
    lines = [
        [row["metric"], f"{row['ours']:g}", f"{row['baseline']:g}", f"{row['ratio']:g}x", row["target"]]
        for row in status_bench.run()
    ]
    return "Status writer", markdown_table(["metric", "ours", "one statement per update", "ratio", "target"], lines)


def image_section() -> tuple[str, str]:
    """The image pipeline's figures (``bench.image_bench``) as a report section."""
    lines = [[row["metric"], f"{row['ours']:g}", row["unit"], row["notes"]] for row in image_bench.run()]
    return "Image pipeline", markdown_table(["metric", "ours", "unit", "notes"], lines)


# The sections after the figures, by ``--only`` name, in the report's order: what the progress line says,
# and what returns the section's (title, Markdown).
SECTIONS: dict[str, tuple[str, Callable[[Progress], tuple[str, str]]]] = {
    "status": (
        "status writer: 10,000 updates at 1,000/s, and 1,000-row flushes (PostgreSQL)",
        lambda step: status_writer_section(),
    ),
    "images": (
        "image pipeline: tasks/s on 1 and 2 threads, memory per task (3 input kinds)",
        lambda step: image_section(),
    ),
    "shards": ("many hosts and shards: 8 hosts, 1 to 4 shards, 1 or 2 processes", shards_bench.run),
    "memory": ("memory with 100,000 queued: every worker process's RSS", memory_bench.run),
    "adaptive": (
        "adaptive delivery: receivers taking 20/s and 100/s, 429 beyond; learned pacing on and off",
        lambda step: adaptive_bench.section(),
    ),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (the defaults are what ``make bench`` runs)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--callbacks", type=int, default=4000, help="callbacks per throughput and burst run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (the median is reported)")
    parser.add_argument("--idle", type=int, default=200, help="single enqueues for the idle latency")
    parser.add_argument("--singles", type=int, default=3000, help="single enqueue() calls for the enqueue rate")
    parser.add_argument("--dramatiq-threads", type=int, default=16, help="threads of the plain Dramatiq baseline")
    parser.add_argument(
        "--output",
        help="Markdown report ('-': none); default BENCHMARKS.md; with --only: none, or a file for that section alone",
    )
    parser.add_argument("--only", choices=["figures", *SECTIONS], help="run one part alone and print it")
    return parser.parse_args(argv)


def only(args: argparse.Namespace, step: Progress) -> int:
    """``--only NAME``: one part alone, printed; a section is also written to ``--output`` if that names a file."""
    if args.only == "figures":
        print(text_table(rows(measure(args, step))))
        return 0
    what, section = SECTIONS[args.only]
    step(what)
    title, body = section(step)
    print(body)
    if args.output not in (None, "-"):
        Path(args.output).write_text(f"## {title}\n\n{body}\n", encoding="utf-8")
        step(f"wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, write the report."""
    args = parse(argv)
    step = Progress()
    if args.only:
        return only(args, step)
    figures = measure(args, step)
    table = rows(figures)
    print(text_table(table))
    done = {}
    for name, (what, section) in SECTIONS.items():
        step(what)
        done[name] = section(step)
        print(done[name][1])
    output = args.output or str(ROOT / "BENCHMARKS.md")
    if output != "-":
        preamble = [
            f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `make bench` (`python -m bench`), "
            f"{time.monotonic() - step.started:.0f} s.",
            "",
            f"Machine: {details.machine()}.",
        ]
        further = details.sections(figures, args.callbacks, args.rounds, args.dramatiq_threads)
        later = [done[name] for name in SECTIONS if name not in ("status", "images")]
        extra = [done["status"], done["images"], *further, *later]
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(markdown("Benchmarks", preamble, table, extra))
        step(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
