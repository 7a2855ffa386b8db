"""Global pacing: GCRA with no burst allowance, as a pure rule and as ``gcra.lua`` on the Redis clock.

A reservation asks for up to ``want`` delivery start slots. Slots are spaced
``interval`` apart from ``max(now, tat)`` (an idle period earns no credit, so
there is never a burst), and are granted only when the first one starts
within ``horizon``. :func:`reserve` states the rule; ``gcra.lua`` runs the same
rule atomically inside Redis (tests hold the two to each other), so any number
of leaders together never exceed the rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from .protocol import AsyncDriver, Operation, Script

MICRO = 1_000_000


@dataclass(frozen=True)
class Reservation:
    """Granted slots: ``granted`` starts at ``offset``, ``offset + interval``, ... from now."""

    granted: int
    offset: float
    interval: float

    def slot(self, index: int) -> float:
        """Offset from now of slot ``index`` (0-based)."""
        return self.offset + index * self.interval


def reserve(tat: float, now: float, interval: float, want: int, horizon: float) -> tuple[Reservation, float]:
    """Reserve up to ``want`` slots; return the reservation and the new TAT (the rule ``gcra.lua`` runs).

    With nothing granted, ``offset`` says how long until a slot frees up: ask
    again after ``offset - horizon``.
    """
    start = max(tat, now)
    offset = start - now
    if offset > horizon or want < 1:
        return Reservation(0, offset, interval), tat
    return Reservation(want, offset, interval), start + want * interval


class Pace:
    """A shared global rate for one queue: every leader reserves start slots here."""

    def __init__(self, client: aioredis.Redis, key: str, rate: float) -> None:
        self._key = key
        self._interval_us = max(1, round(MICRO / rate))
        self._driver = AsyncDriver(client)

    async def reserve(self, want: int, horizon: float) -> Reservation:
        """Reserve up to ``want`` slots whose first starts within ``horizon`` seconds."""
        return await self._driver.run(_reserve(self._key, self._interval_us, want, int(horizon * MICRO)))


def _reserve(key: str, interval_us: int, want: int, horizon_us: int) -> Operation[Reservation]:
    granted, offset_us = yield Script("gcra", (key,), (interval_us, want, horizon_us))
    return Reservation(int(granted), int(offset_us) / MICRO, interval_us / MICRO)
