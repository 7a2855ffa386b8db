"""The leader's CPU per callback, in process: a burst leader against a receiver in another process.

No Dramatiq and no status writer: this process enqueues ``--count`` callbacks
to one host, runs :func:`worker.engine.term.lead` in burst mode (as the tests'
``run_burst`` does) and prints the CPU time of this process per delivered
callback (``time.process_time``: the receiver and Redis run elsewhere), as median and minimum over
the rounds (the machine may be shared: the minimum is the least disturbed). With
``--raw`` it measures the bare aiohttp client (:mod:`bench.raw_client`) doing
the same POSTs in the same process, the floor; with ``--profile`` it prints
the leader's top functions (cProfile, which inflates every figure: compare
profiles with profiles and plain runs with plain runs).

Run: ``python -m bench.leader_profile [--count 5000] [--rounds 3] [--raw] [--profile] [--loop uvloop|asyncio|both]``.
Uses the machine's Redis (``REDIS_URL``, default 127.0.0.1:6379) under a fresh namespace, deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import redis

from worker.config.settings import Settings
from worker.engine.term import lead
from worker.producer import CallbackProducer

from . import raw_client
from .harness import SECRET, ReceiverProcess, worker_env
from .profiles import UNPACED

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def _loop_runner(use_uvloop: bool) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    if not use_uvloop:
        return asyncio.run
    import uvloop

    return uvloop.run


def _settings(namespace: str) -> Settings:
    env = worker_env(REDIS_URL, namespace, CALLBACK_SIGNING_SECRET=SECRET, **UNPACED)  # what `make bench` runs
    return Settings.from_env(env)


def _forget(namespace: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()


def leader_round(url: str, count: int, run: Callable[[Coroutine[Any, Any, Any]], Any], profile: Any = None) -> float:
    """Enqueue ``count`` callbacks to ``url`` and deliver them with a burst leader; CPU µs per delivered one."""
    namespace = f"lp{uuid.uuid4().hex[:10]}"
    settings = _settings(namespace)
    producer = CallbackProducer(settings)
    try:
        for start in range(0, count, 1000):
            producer.enqueue_many([(url, {"n": n, "pad": "x" * 200}) for n in range(start, min(count, start + 1000))])
        if profile is not None:
            profile.enable()
        cpu = time.process_time()
        outcome = run(asyncio.wait_for(lead(settings, burst=True), timeout=300))
        cpu = time.process_time() - cpu
        if profile is not None:
            profile.disable()
    finally:
        producer.close()
        _forget(namespace)
    if outcome.delivered != count:
        raise RuntimeError(f"delivered {outcome.delivered} of {count} ({outcome.reason})")
    return cpu / count * 1e6


def raw_round(url: str, warm_url: str, count: int, use_uvloop: bool) -> float:
    """The bare aiohttp client's CPU µs per POST for ``count`` POSTs (connections opened first)."""
    items = [(f"msg_{n}", json.dumps({"n": n, "pad": "x" * 200})) for n in range(count)]
    cpu = time.process_time()
    raw_client.post_all(url, warm_url, items, use_uvloop=use_uvloop)
    return (time.process_time() - cpu) / count * 1e6


def main() -> None:
    """Measure and print; the receiver process is stopped whatever happens."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--raw", action="store_true", help="also measure the bare aiohttp client")
    parser.add_argument("--profile", action="store_true", help="cProfile the leader (one extra round)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="uvloop", help="the event loop")
    parser.add_argument("--top", type=int, default=35)
    args = parser.parse_args()
    loops = ("asyncio", "uvloop") if args.loop == "both" else (args.loop,)
    figures: dict[str, list[float]] = {f"{who} on {loop}": [] for who in ("leader", "raw") for loop in loops}
    with ReceiverProcess() as receiver:
        url, warm = f"{receiver.url}/run/leader", f"{receiver.url}/warm"
        leader_round(url, min(args.count, 500), _loop_runner(False))  # warm: imports, scripts loaded, caches
        for _ in range(args.rounds):  # interleaved, so a neighbour's load falls on every contender alike
            for loop in loops:
                figures[f"leader on {loop}"].append(leader_round(url, args.count, _loop_runner(loop == "uvloop")))
                if args.raw:
                    figures[f"raw on {loop}"].append(raw_round(url, warm, args.count, loop == "uvloop"))
        for name, values in figures.items():
            if values:
                shown = ", ".join(f"{value:.0f}" for value in values)
                print(
                    f"{name}: median {statistics.median(values):.0f}, min {min(values):.0f} µs CPU/callback ({shown})"
                )
        if args.profile:
            profile = cProfile.Profile(time.process_time)  # CPU, not the wall time spent waiting in epoll
            leader_round(url, args.count, _loop_runner(loops[-1] == "uvloop"), profile)
            stats = pstats.Stats(profile)
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats("worker/", args.top)


if __name__ == "__main__":
    main()
