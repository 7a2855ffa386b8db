"""Redis commands per delivered callback, from ``INFO commandstats`` of a private Redis.

Redis counts commands run inside Lua scripts as well as the ``EVALSHA`` that
ran them, so these are commands *executed*, not round trips. The producer's
share is the ``XADD``, ``MULTI`` and ``EXEC`` run while ``enqueue_many`` is in
progress (a window of its own); the worker's share is everything else, the
Dramatiq broker's own commands included.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from .harness import PrivateRedis

PRODUCER_COMMANDS = frozenset({"xadd", "multi", "exec"})
BENCH_COMMANDS = frozenset({"info"})  # the snapshots themselves


@dataclass
class CommandTally:
    """Commands counted over one or more runs, and the callbacks those runs delivered."""

    calls: Counter[str] = field(default_factory=Counter)
    callbacks: int = 0
    producer: int = 0  # of ``calls``, those the producer sent

    def add(self, calls: Mapping[str, int], callbacks: int, while_enqueueing: Mapping[str, int]) -> None:
        """Add one run's counts: all of them, and those run while the producer was enqueueing."""
        self.calls.update(calls)
        self.callbacks += callbacks
        self.producer += sum(n for name, n in while_enqueueing.items() if name in PRODUCER_COMMANDS)

    @property
    def worker(self) -> int:
        """Commands the worker ran (its own and its Dramatiq broker's)."""
        return self.total - self.producer

    @property
    def total(self) -> int:
        """Every command of the runs."""
        return sum(self.calls.values())

    def per_callback(self, count: int) -> float:
        """``count`` divided by the callbacks delivered."""
        return count / self.callbacks if self.callbacks else float("nan")

    def breakdown(self) -> list[tuple[str, float]]:
        """(command, calls per callback), most frequent first."""
        return [(name, self.per_callback(n)) for name, n in self.calls.most_common()]


class CommandWindow:
    """Counts the commands run between its creation and :meth:`close`."""

    def __init__(self, redis: PrivateRedis) -> None:
        self._redis = redis
        self._before = redis.command_calls()

    def close(self, own: Mapping[str, int] | None = None) -> Counter[str]:
        """The commands run meanwhile, minus the snapshots and the caller's ``own`` polling commands."""
        after = self._redis.command_calls()
        delta = Counter({name: calls - self._before.get(name, 0) for name, calls in after.items()})
        delta.subtract(own or {})
        for name in BENCH_COMMANDS:
            delta.pop(name, None)
        return +delta  # drop zero and negative counts
