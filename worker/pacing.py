"""Global pacing as a pure function: GCRA with no burst allowance.

A reservation asks for up to ``want`` delivery start slots. Slots are spaced
``interval`` apart from ``max(now, tat)`` (an idle period earns no credit, so
there is never a burst), and are granted only when the first one starts
within ``horizon``. ``gcra.lua`` is the same rule run atomically inside Redis,
so any number of leaders together never exceed the rate.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    """Reserve up to ``want`` slots; return the reservation and the new TAT.

    With nothing granted, ``offset`` says how long until a slot frees up: ask
    again after ``offset - horizon``.
    """
    start = max(tat, now)
    offset = start - now
    if offset > horizon or want < 1:
        return Reservation(0, offset, interval), tat
    return Reservation(want, offset, interval), start + want * interval
