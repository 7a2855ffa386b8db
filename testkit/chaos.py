"""The accounting of a chaos run: what was pending at each fault, and which callbacks it put at risk.

A callback is *at risk* from a fault when its entry was pending at the fault and
was answered 2xx after its consumer read (or claimed) it but before the fault's
``until``: its ack may never reach Redis, so the entry may be sent once more.
The sum over the faults bounds the duplicates of the run (deliveries beyond the
first per webhook-id).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import redis

from worker.streams.client import text, texts
from worker.streams.keys import GROUP, Keys

from .receiver import Arrival, chaos_fails

CLOCK_SLACK = 0.05  # seconds: Redis's idle times and this process's clock are read apart


@dataclass(frozen=True)
class Held:
    """An entry pending at a fault: its webhook-id and since when (``time.time()``) its consumer held it."""

    callback_id: str
    since: float


@dataclass
class Fault:
    """One fault: its kind, the batch it followed, when (``time.time()``), what was pending, and until when.

    ``in_flight`` and ``at_risk`` are filled by :func:`assess` once the run is over.
    """

    kind: str
    batch: int
    at: float
    held: list[Held] = field(default_factory=list)
    until: float = 0.0
    in_flight: int = 0  # held entries sent in [since, until]
    at_risk: int = 0  # held entries answered 2xx in [since, until]

    def figures(self, began: float) -> dict[str, Any]:
        """The fault as printable figures, ``at_s`` counted from ``began``."""
        return {
            "kind": self.kind,
            "batch": self.batch,
            "at_s": round(self.at - began, 2),
            "pending": len(self.held),
            "in_flight": self.in_flight,
            "at_risk": self.at_risk,
        }


def consumer_pid(name: Any) -> int | None:
    """The process id in a consumer name (``host:pid:token``)."""
    parts = text(name).split(":")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def held_entries(client: redis.Redis, keys: Keys, *, pid: int | None = None, dead: Collection[int] = ()) -> list[Held]:
    """The entries pending now in the deliverers group: of process ``pid``'s consumers, or of all but ``dead``'s."""
    now = time.time()
    try:
        pending: list[dict[str, Any]] = client.xpending_range(keys.stream, GROUP, min="-", max="+", count=1_000_000)
    except redis.ResponseError:  # NOGROUP: no leader has run yet
        return []
    owners = [consumer_pid(p["consumer"]) for p in pending]
    pending = [
        p for p, owner in zip(pending, owners, strict=True) if (owner == pid if pid is not None else owner not in dead)
    ]
    pipe = client.pipeline(transaction=False)
    for p in pending:
        pipe.xrange(keys.stream, p["message_id"], p["message_id"])
    held = []
    for p, found in zip(pending, pipe.execute(), strict=True):
        if found:  # otherwise settled meanwhile
            since = now - p["time_since_delivered"] / 1000 - CLOCK_SLACK
            held.append(Held(texts(found[0][1])["cid"], since))
    return held


def chaos_answers(arrivals: list[Arrival], percent: float) -> list[bool]:
    """Per arrival at ``/chaos/<percent>``, whether it was answered 2xx (an id's k-th arrival is its attempt k)."""
    attempts: Counter[str] = Counter()
    answers = []
    for arrival in arrivals:
        attempts[arrival.webhook_id] += 1
        answers.append(not chaos_fails(percent, arrival.webhook_id, attempts[arrival.webhook_id]))
    return answers


def assess(fault: Fault, arrivals: list[Arrival], answers: list[bool]) -> None:
    """Count the fault's held entries that were sent (in flight) and answered 2xx (at risk) in their window."""
    by_id: dict[str, list[tuple[float, bool]]] = {}
    for arrival, ok in zip(arrivals, answers, strict=True):
        by_id.setdefault(arrival.webhook_id, []).append((arrival.at, ok))
    fault.in_flight = fault.at_risk = 0
    for held in fault.held:
        sent = [ok for at, ok in by_id.get(held.callback_id, []) if held.since <= at <= fault.until]
        fault.in_flight += bool(sent)
        fault.at_risk += any(sent)


def dead_letters(client: redis.Redis, keys: Keys) -> list[dict[str, str]]:
    """The dead-letter stream's entries, as text."""
    return [texts(fields) for _, fields in client.xrange(keys.dead) or []]
