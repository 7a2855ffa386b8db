"""Each host's learned pace and its circuit (pure policy), and a simulated rate-limited receiver."""

from __future__ import annotations

import heapq
import math

import pytest

from worker.engine import adaptive
from worker.engine.adaptive import CLOSED, HALF_OPEN, OPEN, HostPace, ceiling_of
from worker.engine.hosts import HostQueues
from worker.streams.entry import CallbackEntry


def answer(pace: HostPace, now: float, status: int | None, error: str | None = None, **options) -> None:
    options.setdefault("retry_after", None)
    options.setdefault("probe", False)
    options.setdefault("ceiling", 10000.0)
    options.setdefault("probe_interval", 10.0)
    adaptive.observe(pace, now, status=status, error=error, **options)


def test_a_refusal_cuts_the_rate_to_a_share_of_what_the_host_accepted_and_pauses_the_host():
    pace = HostPace(rate=1000.0, first_start=9.0)
    for n in range(100):  # 100 accepted over the last second
        answer(pace, 10.0 + n / 100, 204)
    answer(pace, 11.0, 429, retry_after=1.0)
    assert pace.rate == pytest.approx(adaptive.BETA * 100, rel=0.05)
    assert pace.ready_at() >= 12.0  # Retry-After holds the whole host, not only that callback
    assert pace.blocked(11.5) and not pace.blocked(12.1)
    answer(pace, 11.2, 429, retry_after=1.0)  # the rest of the same overshoot: no second cut
    assert pace.rate == pytest.approx(adaptive.BETA * 100, rel=0.05)


def test_successes_grow_the_rate_back_additively_up_to_the_ceiling():
    pace = HostPace(rate=80.0, capacity=100.0, last_success=0.0)
    for second in range(1, 4):
        answer(pace, float(second), 204, ceiling=120.0)
    assert pace.rate == pytest.approx(80 + 3 * adaptive.ALPHA * 100)
    for second in range(4, 200):
        answer(pace, float(second), 204, ceiling=120.0)
    assert pace.rate == 120.0


def test_spacing_follows_the_rate():
    pace = HostPace(rate=4.0)
    assert adaptive.start(pace, 100.0) is False
    assert pace.ready_at() == pytest.approx(100.25)


def test_a_host_failing_nine_in_ten_of_twenty_attempts_opens_and_one_probe_closes_it():
    pace = HostPace(rate=50.0)
    for n in range(19):
        answer(pace, 1.0 + n * 0.1, 500)
    assert pace.circuit == CLOSED  # not yet 20 attempts
    answer(pace, 3.0, 500)
    assert pace.circuit == OPEN and pace.ready_at() == pytest.approx(13.0)
    assert adaptive.start(pace, 13.0) is True and pace.circuit == HALF_OPEN
    assert pace.ready_at() == math.inf  # one probe at a time
    answer(pace, 13.1, 204, probe=True)
    assert pace.circuit == CLOSED and pace.rate >= 50.0  # the rate is there when the host is back


def test_a_failed_probe_opens_the_circuit_for_another_interval():
    pace = HostPace(rate=50.0, circuit=OPEN, probe_at=5.0)
    adaptive.start(pace, 5.0)
    answer(pace, 5.2, 503, probe=True)
    assert pace.circuit == OPEN and pace.ready_at() == pytest.approx(15.2)


def test_a_run_of_connection_errors_opens_the_circuit_at_once():
    pace = HostPace(rate=50.0)
    for n in range(adaptive.ERROR_RUN):
        answer(pace, float(n), None, "connect")
    assert pace.circuit == OPEN


def test_a_final_4xx_shows_the_host_is_up_and_our_own_guard_says_nothing():
    pace = HostPace(rate=50.0)
    for n in range(30):
        answer(pace, n * 0.1, 404 if n % 2 else None, None if n % 2 else "blocked")
    assert pace.circuit == CLOSED and pace.last_status == 404


def test_a_503_from_a_host_that_accepts_nothing_does_not_collapse_its_rate():
    pace = HostPace(rate=200.0)
    for n in range(40):
        answer(pace, n * 0.5, 503)
    assert pace.rate == 200.0  # down, not busy: the circuit judges it
    assert pace.circuit == OPEN


def test_ceilings_take_the_named_host_then_the_default_never_above_the_global_rate():
    named = {"a:443": 5.0, "b:443": 5000.0}
    assert ceiling_of("a:443", 100.0, 0.0, named) == 5.0
    assert ceiling_of("b:443", 100.0, 0.0, named) == 100.0
    assert ceiling_of("c:443", 100.0, 20.0, named) == 20.0
    assert ceiling_of("c:443", 100.0, 0.0, named) == 100.0


def test_a_held_back_host_keeps_only_its_share_of_the_buffer_and_others_start():
    queues = HostQueues(8, buffer=8, min_share=2, adaptive=True, ceiling=lambda host: 100.0)
    for n in range(6):
        assert queues.offer(CallbackEntry(f"msg_a{n}", "https://a.example/", "{}", stream_id=f"1-{n}"))
    queues.pace("a.example:443").paused_until = 1e12  # a Retry-After far away
    for n in range(2):
        assert queues.offer(CallbackEntry(f"msg_b{n}", "https://b.example/", "{}", stream_id=f"2-{n}"))
    shed = queues.shed()  # a held host counts as saturated: it keeps its share (8 // 2 hosts waiting)
    assert [entry.callback_id for entry in shed] == ["msg_a5", "msg_a4"]
    now = 1000.0
    assert queues.startable(now) == 2
    first = queues.take(now)
    assert first is not None and first.callback_id == "msg_b0"
    assert queues.take(now) is None  # b's next start is 1/100 s away (its pace); a is held
    assert queues.next_ready(now) == pytest.approx(0.01)
    second = queues.take(now + 0.01)
    assert second is not None and second.callback_id == "msg_b1"


def simulate(
    limit: float, seconds: float = 40.0, ceiling: float = 1000.0, latency: float = 0.005
) -> tuple[float, float]:
    """A receiver accepting ``limit``/s (token bucket, 429 + Retry-After: 1 beyond) driven by one host's pace.

    Returns (share of requests answered 429 after the first 5 s, accepted per second after 5 s / limit).
    """
    pace = HostPace(rate=ceiling)
    burst = max(1.0, limit / 5)
    tokens, refilled, now = burst, 0.0, 0.0
    flying: list[tuple[float, bool]] = []
    answers: list[tuple[float, bool]] = []
    for _ in range(1_000_000):
        if now >= seconds:
            break
        while flying and flying[0][0] <= now:
            done, ok = heapq.heappop(flying)
            answer(pace, done, 204 if ok else 429, retry_after=None if ok else 1.0, ceiling=ceiling)
        if len(flying) < 64 and pace.ready_at() <= now:
            adaptive.start(pace, now)
            tokens, refilled = min(burst, tokens + (now - refilled) * limit), now
            ok = tokens >= 1
            tokens -= 1 if ok else 0
            answers.append((now, ok))
            heapq.heappush(flying, (now + latency, ok))
            continue
        due = [pace.ready_at() if len(flying) < 64 else math.inf] + ([flying[0][0]] if flying else [])
        now = max(now + 1e-6, min(due))
    later = [ok for at, ok in answers if at >= 5.0]
    return later.count(False) / len(later), later.count(True) / (seconds - 5.0) / limit


@pytest.mark.parametrize("limit", [20.0, 100.0])
def test_against_a_rate_limited_receiver_few_requests_are_refused_and_most_of_the_rate_is_used(limit):
    refused, used = simulate(limit)
    assert refused <= 0.10
    assert used >= 0.8


def test_callbacks_of_a_paused_host_that_are_older_than_the_max_age_go_to_the_dead_letters(
    make_settings, receiver, rclient, keys, redis_url
):
    import time

    from conftest import run_burst

    from worker.streams import host_book
    from worker.streams.client import sync_client
    from worker.streams.protocol import SyncDriver
    from worker.streams.shards import host_port

    settings = make_settings(CALLBACK_MAX_AGE=3600)
    client = sync_client(redis_url)
    SyncDriver(client).run(host_book.pause(keys, host_port(receiver.url), 0))
    client.close()
    old = int((time.time() - 7200) * 1000)
    for n in range(3):
        entry = CallbackEntry(f"msg_old{n}", f"{receiver.url}/ok", "{}", first_enqueued_ms=old, enqueued_ms=old)
        rclient.xadd(keys.stream, entry.fields())
    run_burst(settings)
    assert receiver.ids() == []  # paused: nothing went out
    letters = rclient.xrange(keys.dead)
    assert len(letters) == 3
    assert all("host unavailable: paused by an operator" in fields["reason"] for _, fields in letters)


def test_a_host_at_the_global_rate_is_spaced_by_the_global_pace_alone():
    at_global, below = HostPace(rate=200.0), HostPace(rate=50.0)
    adaptive.start(at_global, 10.0, global_rate=200.0)
    adaptive.start(below, 10.0, global_rate=200.0)
    assert at_global.ready_at() == 0.0  # a global slot that woke late must not refuse the next one
    assert below.ready_at() == pytest.approx(10.02)
