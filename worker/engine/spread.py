"""How shard leaderships spread over worker processes (pure policy; the fleet is read elsewhere).

Each shard has one leader, and a process should not lead a second shard while
another live process leads none: leaders are CPU-bound Python, one core each.
Generally: a process takes a shard only if no live process leads fewer than it
does, and one leading two or more above the least-loaded process hands one over.
"""

from __future__ import annotations

from collections.abc import Mapping

MAX_DECLINES = 8  # a shard declined this often is taken wherever it lands: a free shard must not stay unled


def may_take(here: str, fleet: Mapping[str, int], declined: int = 0) -> bool:
    """Whether process ``here`` (``fleet``: live process -> shards led) should lead one more shard."""
    if declined >= MAX_DECLINES:
        return True
    mine = fleet.get(here, 0)
    others = [led for name, led in fleet.items() if name != here]
    return not others or mine <= min(others)


def should_hand_over(here: str, fleet: Mapping[str, int]) -> bool:
    """Whether process ``here`` leads so many more shards than the least-loaded live process that one should move."""
    mine = fleet.get(here, 0)
    others = [led for name, led in fleet.items() if name != here]
    return bool(others) and mine >= min(others) + 2
