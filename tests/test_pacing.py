"""Global pacing: the pure GCRA rule, and ``gcra.lua`` in real Redis keeping any number of leaders at the rate.

Slot times measured against Redis are bracketed by the local clock read just
before and just after each call (Redis runs on this machine's clock), and every
bound below allows for that bracket, so nothing depends on how fast the test runs.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import time

import pytest

from worker.streams.client import async_client
from worker.streams.keys import Keys
from worker.streams.pace import MICRO, Pace, Reservation, reserve

# (tat, now, interval, want, horizon) -> (granted, offset, new tat)
RESERVE: list[tuple[tuple[float, float, float, int, float], tuple[int, float, float]]] = [
    # Idle: slots start now.
    ((0.0, 100.0, 0.01, 5, 1.0), (5, 0.0, 100.05)),
    # An idle period earns no credit: no burst after a pause.
    ((50.0, 100.0, 0.01, 5, 1.0), (5, 0.0, 100.05)),
    # Slots already reserved: the next ones queue behind them.
    ((100.5, 100.0, 0.01, 5, 1.0), (5, 0.5, 100.55)),
    # Exactly at the horizon still counts.
    ((101.0, 100.0, 0.01, 5, 1.0), (5, 1.0, 101.05)),
    # Beyond the horizon: nothing granted, TAT unchanged, offset says how long until a slot frees up.
    ((102.0, 100.0, 0.01, 5, 1.0), (0, 2.0, 102.0)),
    ((100.0 + 1e-9 + 1.0, 100.0, 0.01, 5, 1.0), (0, 1.0 + 1e-9, 101.0 + 1e-9)),
    # Nothing wanted: nothing granted, TAT unchanged.
    ((0.0, 100.0, 0.01, 0, 1.0), (0, 0.0, 0.0)),
    ((100.2, 100.0, 0.01, 0, 1.0), (0, 0.2, 100.2)),
    # One slot; a slow rate.
    ((0.0, 100.0, 2.0, 1, 0.0), (1, 0.0, 102.0)),
    ((102.0, 100.0, 2.0, 1, 0.0), (0, 2.0, 102.0)),
    ((102.0, 100.0, 2.0, 3, 5.0), (3, 2.0, 108.0)),
]


@pytest.mark.parametrize(("given", "expected"), RESERVE)
def test_reserve(given, expected):
    reservation, new_tat = reserve(*given)
    granted, offset, tat = expected
    assert reservation.granted == granted
    assert reservation.offset == pytest.approx(offset)
    assert reservation.interval == given[2]
    assert new_tat == pytest.approx(tat)


def test_reservation_slots():
    reservation = Reservation(granted=3, offset=0.5, interval=0.25)
    assert [reservation.slot(index) for index in range(3)] == [0.5, 0.75, 1.0]


def test_a_sequence_of_pure_reservations_never_overlaps_and_never_exceeds_the_rate():
    interval, horizon = 0.01, 0.5
    tat, slots = 0.0, []
    for step in range(2000):
        now = 100.0 + step * 0.0007  # callers arrive faster than the rate
        reservation, tat = reserve(tat, now, interval, 7, horizon)
        slots.extend(now + reservation.slot(index) for index in range(reservation.granted))
    assert len(slots) > 100
    assert all(later - earlier >= interval - 1e-9 for earlier, later in itertools.pairwise(slots))
    assert _busiest_second(slots) <= 1 / interval + 1


# -- gcra.lua against real Redis -----------------------------------------------------------------


def _busiest_second(times: list[float]) -> int:
    """The most slot times in any closed 1-second window."""
    ordered = sorted(times)
    return max((bisect.bisect_right(ordered, start + 1.0) - index for index, start in enumerate(ordered)), default=0)


class Recorder:
    """Reserves from one Pace and keeps every granted slot, bracketed by the local clock."""

    def __init__(self, pace: Pace) -> None:
        self.pace = pace
        self.slots: list[float] = []  # lower bounds of the absolute slot times
        self.calls: list[tuple[float, float, Reservation]] = []
        self.widest = 0.0  # the longest call: how far a lower bound may sit below the true time

    async def reserve(self, want: int, horizon: float) -> Reservation:
        before = time.time()
        reservation = await self.pace.reserve(want, horizon)
        after = time.time()
        self.widest = max(self.widest, after - before)
        self.calls.append((before, after, reservation))
        self.slots.extend(before + reservation.slot(index) for index in range(reservation.granted))
        return reservation


def _limit(rate: float, slack: float) -> int:
    """At most this many slots, spaced 1/rate apart, fit in a window of 1 s + slack (the clock bracket)."""
    return math.floor((1.0 + slack) * rate + 1e-6) + 1


async def _tight_loop(recorder: Recorder, want: int, horizon: float, refusals: int = 20) -> None:
    """Reserve as fast as possible until the horizon has refused ``refusals`` times."""
    refused = 0
    for _ in range(5000):
        if (await recorder.reserve(want, horizon)).granted == 0:
            refused += 1
            if refused == refusals:
                return
    raise AssertionError("the horizon never refused a reservation")


def _check_rate(recorders: list[Recorder], rate: float, horizon: float) -> None:
    """No 1-second window, and no stretch from the first call to the last slot, holds more than the rate allows."""
    slots = [slot for recorder in recorders for slot in recorder.slots]
    slack = max(recorder.widest for recorder in recorders)
    busiest = _busiest_second(slots)
    assert busiest <= _limit(rate, slack)
    assert busiest >= rate // 2  # the window really was full: the bound above is not vacuous
    first_call = min(recorder.calls[0][0] for recorder in recorders)
    last_call = max(recorder.calls[-1][1] for recorder in recorders)
    want = max(reservation.granted for recorder in recorders for _, _, reservation in recorder.calls)
    # Every slot starts within the horizon of some call: at most this many fit.
    assert len(slots) <= math.floor((last_call - first_call + horizon + slack) * rate) + want + 1


def test_lua_reservations_in_a_tight_loop_never_exceed_the_rate(redis_url, namespace):
    rate, horizon = 1000.0, 2.5

    async def run() -> Recorder:
        client = async_client(redis_url)
        try:
            recorder = Recorder(Pace(client, Keys(namespace).pace, rate))
            await _tight_loop(recorder, want=10, horizon=horizon)
            return recorder
        finally:
            await client.aclose()

    recorder = asyncio.run(run())
    for _, _, reservation in recorder.calls:
        assert reservation.granted in (0, 10)
        assert reservation.interval == pytest.approx(1 / rate)
        if reservation.granted:
            assert reservation.offset <= horizon
        else:
            assert reservation.offset > horizon
    assert len(recorder.slots) >= horizon * rate  # the horizon was filled before the first refusal
    _check_rate([recorder], rate, horizon)


def test_lua_reservations_follow_on_from_each_other_exactly(redis_url, namespace, rclient):
    """The TAT in Redis moves by exactly granted x interval; a refusal leaves it alone (mirrors ``reserve``)."""
    rate = 500.0
    key = Keys(namespace).pace
    interval_us = round(MICRO / rate)
    wants = (3, 1, 8, 0, 5, 2, 7)

    async def redis_now_us(client) -> int:
        seconds, micros = await client.time()
        return seconds * MICRO + micros

    async def run() -> list[tuple[int | None, int, int, int, Reservation]]:
        client = async_client(redis_url)
        try:
            pace = Pace(client, key, rate)
            rows = []
            for want in wants:
                tat_before = await client.get(key)
                before = await redis_now_us(client)
                reservation = await pace.reserve(want, horizon=30.0)
                after = await redis_now_us(client)
                tat_after = await client.get(key)
                previous = None if tat_before is None else int(tat_before)
                current = None if tat_after is None else int(tat_after)
                rows.append((previous, current, before, after, reservation))
            return rows
        finally:
            await client.aclose()

    rows = asyncio.run(run())
    assert [row[4].granted for row in rows] == list(wants)
    for previous, current, before, after, reservation in rows:
        granted_us = reservation.granted * interval_us
        if reservation.granted == 0:
            assert current == previous  # nothing reserved, nothing written
        elif previous is not None and reservation.offset > 0:
            # Queued behind earlier slots: the first slot is the old TAT.
            assert current == previous + granted_us
            assert before <= previous - round(reservation.offset * MICRO) <= after
        else:
            # Idle: the first slot is Redis's "now", between the two TIME readings around the call.
            assert current is not None
            assert before <= current - granted_us <= after
    assert rclient.pttl(key) > 0  # the key expires once its TAT has passed


def test_two_leaders_on_the_same_key_together_never_exceed_the_rate(redis_url, namespace):
    rate, horizon = 1000.0, 2.5
    key = Keys(namespace).pace

    async def run() -> tuple[Recorder, Recorder]:
        first_client, second_client = async_client(redis_url), async_client(redis_url)
        try:
            first = Recorder(Pace(first_client, key, rate))
            second = Recorder(Pace(second_client, key, rate))
            await asyncio.gather(
                _tight_loop(first, want=10, horizon=horizon), _tight_loop(second, want=7, horizon=horizon)
            )
            return first, second
        finally:
            await first_client.aclose()
            await second_client.aclose()

    first, second = asyncio.run(run())
    assert first.slots
    assert second.slots
    _check_rate([first, second], rate, horizon)


def test_nothing_is_granted_when_the_first_slot_would_start_beyond_the_horizon(redis_url, namespace, rclient):
    rate = 10.0  # 100 ms per slot: 100 slots reach 10 s ahead
    key = Keys(namespace).pace

    async def run() -> tuple[Reservation, Reservation, Reservation, Reservation]:
        client = async_client(redis_url)
        try:
            pace = Pace(client, key, rate)
            filled = await pace.reserve(100, horizon=1.0)
            tat = await client.get(key)
            refused = await pace.reserve(5, horizon=1.0)
            assert await client.get(key) == tat  # a refusal reserves nothing
            nothing = await pace.reserve(0, horizon=60.0)
            assert await client.get(key) == tat
            later = await pace.reserve(5, horizon=60.0)
            return filled, refused, nothing, later
        finally:
            await client.aclose()

    filled, refused, nothing, later = asyncio.run(run())
    assert (filled.granted, filled.offset) == (100, 0.0)
    assert refused.granted == 0
    assert 1.0 < refused.offset <= 10.0  # and it says how long until the first free slot
    assert nothing.granted == 0
    # A wider horizon is granted, queued right behind the first hundred.
    assert later.granted == 5
    assert later.offset == pytest.approx(refused.offset, abs=1.0)
    assert 1.0 < later.offset <= 10.0
    assert rclient.pttl(key) > 10_000
