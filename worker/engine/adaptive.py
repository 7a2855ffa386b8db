"""Each host's pace, learned from its answers, and its circuit (pure policy: times are passed in, no I/O).

Rate (AIMD, rate-based like the AWS SDK's adaptive retry, not window-based):

- a host starts at its *ceiling*: the global rate, or a configured one
  (``CALLBACK_HOST_RATE``, ``CALLBACK_HOST_RATES``);
- a refusal (429, 503) or a timeout cuts it to ``BETA`` times what the host
  was seen to accept since it was last paused (over ``MEASURE`` seconds at
  most; at most the refused rate): one cut per ``CUT_GAP``, so the answers to
  one overshoot still in flight count once. The host's whole queue then waits
  at least the ``Retry-After`` it gave (or one interval);
- every success adds ``ALPHA`` times the rate at the last cut per second of
  sending, up to the ceiling: after a cut the host is back at its old rate in
  about ``(1 - BETA) / ALPHA`` seconds, then probes beyond it, slowly;
- until a cut was measured over ``TRUSTED`` seconds of answers (the first
  refusals come within milliseconds, when too little was seen to tell the
  host's rate), the rate grows by ``SLOW_START`` of itself per second instead,
  as TCP's slow start does, so an early underestimate is left quickly.

Circuit: ``closed`` until, over the last ``WINDOW`` seconds, at least
``MIN_ATTEMPTS`` attempts failed at ``FAIL_RATIO`` or more (connection errors,
timeouts, 5xx), or ``ERROR_RUN`` connection errors came in a row; then
``open``: nothing starts, one probe goes out per probe interval
(``half_open`` while it flies); the first success closes it, a failure opens
it again. An operator may pause a host on purpose (``ops host pause``): nothing
starts until it is resumed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config.settings import Settings

BETA = 0.85  # a refusal cuts the rate to this share of what the host accepted
ALPHA = 0.015  # per second of successes, the rate grows by this share of its rate at the last cut
MEASURE = 1.0  # seconds of successes that tell what the host accepts (short: a ramp-up is not averaged in)
MEASURE_MIN = 1.0  # seconds: a shorter history is counted as if it spanned this long (a burst is not a rate)
TRUSTED = 1.0  # seconds of history a cut needs for its measure to count as the host's capacity
SLOW_START = 1.0  # without a trusted capacity, the rate grows by this share of itself per second
CUT_GAP = 1.0  # seconds after a cut during which further refusals do not cut again
MIN_RATE = 0.1  # deliveries per second: the slowest a host is ever paced
WINDOW = 60.0  # seconds of attempts the circuit judges
MIN_ATTEMPTS = 20
FAIL_RATIO = 0.9
ERROR_RUN = 5  # connection errors in a row open the circuit at once
MAX_PAUSE = 300.0  # seconds: the longest a Retry-After pauses a whole host

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
REFUSALS = (429, 503)  # "slow down": cut the rate


@dataclass
class HostPace:
    """What the leader knows of one ``host:port``; times are seconds on one clock (the caller's)."""

    rate: float
    capacity: float = 0.0  # the rate at the last cut (0: never cut)
    next_start: float = 0.0  # no start before this (spacing of 1 / rate)
    paused_until: float = 0.0  # no start before this (Retry-After)
    held_until: float = 0.0  # an operator's pause: no start before this (inf: until resumed)
    cut_at: float = -math.inf
    first_start: float = math.inf  # of this pace's first attempt: no evidence before it
    circuit: str = CLOSED
    probe_at: float = 0.0  # open: the next probe's time
    error_run: int = 0
    last_status: int | None = None
    last_held: float = -math.inf  # when a callback of it was last held back (deferred for its circuit or pause)
    last_success: float = -math.inf
    accepted: deque[float] = field(default_factory=deque)  # success times within MEASURE
    attempts: deque[tuple[float, bool]] = field(default_factory=deque)  # (time, failed) within WINDOW
    changed: bool = True  # since the state was last written to Redis

    def ready_at(self) -> float:
        """When the next attempt may start (``inf`` while a probe is in flight or an operator holds it)."""
        if self.circuit == HALF_OPEN:
            return math.inf
        at = self.probe_at if self.circuit == OPEN else max(self.next_start, self.paused_until)
        return max(at, self.held_until)

    def blocked(self, now: float) -> bool:
        """Whether the host is held back beyond its spacing (a pause, a circuit): it should not fill the buffer."""
        return self.circuit != CLOSED or max(self.paused_until, self.held_until) > now


def start(pace: HostPace, now: float, global_rate: float = math.inf) -> bool:
    """An attempt starts now; returns whether it is the open circuit's probe.

    A host paced at the global rate (or above) is not spaced again here: the global
    pace's slots already are, and spacing them twice made a slot that woke a little
    late refuse the next one (measured: 167/s of a 200/s pace).
    """
    if pace.circuit == OPEN:
        pace.circuit, pace.changed = HALF_OPEN, True
        return True
    pace.first_start = min(pace.first_start, now)
    if pace.rate < global_rate:
        pace.next_start = max(now, pace.next_start) + 1.0 / pace.rate
    return False


def succeeded(pace: HostPace, now: float, ceiling: float, status: int | None) -> None:
    """A 2xx (or a final 4xx: the host is up and answering)."""
    if pace.circuit in (OPEN, HALF_OPEN):
        pace.circuit, pace.attempts, pace.changed = CLOSED, deque(), True
    elapsed = min(1.0, max(0.0, now - pace.last_success))
    step = ALPHA * pace.capacity * elapsed if pace.capacity else SLOW_START * pace.rate * elapsed
    if pace.rate < ceiling:
        pace.rate, pace.changed = min(ceiling, pace.rate + step), True
    pace.rate = min(pace.rate, ceiling)
    pace.last_success = now
    pace.error_run = 0
    pace.last_status = status
    _keep(pace.accepted, now, MEASURE).append(now)
    _record(pace, now, failed=False)


def refused(pace: HostPace, now: float, retry_after: float | None, status: int | None, probe: bool) -> None:
    """429, 503 or a timeout: cut the rate (once per ``CUT_GAP``) and hold the host's queue for Retry-After.

    A host that accepted nothing lately is not cut for a 503 or a timeout (it is
    down, not busy): its circuit judges it, and its rate is there when it is back.
    """
    pace.last_status = status
    since = max(now - MEASURE, pace.paused_until, min(now, pace.first_start))  # a pause is no evidence
    history = max(0.0, now - since)
    seen = sum(1 for at in _keep(pace.accepted, now, MEASURE) if at > since) / max(MEASURE_MIN, history)
    if now - pace.cut_at >= CUT_GAP and (status == 429 or seen > 0) and pace.paused_until <= now:
        base = min(pace.rate, seen) if seen > 0 else pace.rate
        pace.capacity = base if history >= TRUSTED else pace.capacity  # a short history tells nothing new
        pace.rate = max(MIN_RATE, BETA * base)
        pace.cut_at = now
    pause = min(MAX_PAUSE, retry_after if retry_after is not None else 1.0 / pace.rate)
    pace.paused_until = max(pace.paused_until, now + pause)
    pace.changed = True
    if status != 429:  # a 503 or a timeout: the host may be down, not only busy
        failed(pace, now, status, probe, connection_error=False, interval=pause)


def failed(
    pace: HostPace, now: float, status: int | None, probe: bool, *, connection_error: bool, interval: float
) -> None:
    """A 5xx, a timeout or a connection error: the circuit's evidence; opens it when the evidence says so."""
    pace.last_status = status
    pace.error_run = pace.error_run + 1 if connection_error else 0
    _record(pace, now, failed=True)
    if probe or pace.circuit == HALF_OPEN:
        _open(pace, now, interval)
        return
    failures = sum(1 for _, bad in pace.attempts if bad)
    tripped = len(pace.attempts) >= MIN_ATTEMPTS and failures >= FAIL_RATIO * len(pace.attempts)
    if pace.circuit == CLOSED and (tripped or pace.error_run >= ERROR_RUN):
        _open(pace, now, interval)


def _open(pace: HostPace, now: float, interval: float) -> None:
    pace.circuit, pace.probe_at, pace.changed = OPEN, now + interval, True


def _record(pace: HostPace, now: float, *, failed: bool) -> None:
    attempts = pace.attempts
    while attempts and now - attempts[0][0] > WINDOW:
        attempts.popleft()
    attempts.append((now, failed))


def _keep(times: deque[float], now: float, span: float) -> deque[float]:
    while times and now - times[0] > span:
        times.popleft()
    return times


def observe(
    pace: HostPace,
    now: float,
    *,
    status: int | None,
    error: str | None,
    retry_after: float | None,
    probe: bool,
    ceiling: float,
    probe_interval: float,
) -> None:
    """Learn from one attempt's answer (``error``: the sender's kind, e.g. ``timeout``, ``connect``)."""
    if error in {"blocked", "invalid_url"}:
        return  # refused by our own guard: says nothing about the host
    if status is not None and status < 500 and status not in REFUSALS:
        succeeded(pace, now, ceiling, status)  # 2xx, or a final 4xx: the host is up and answering
    elif status in REFUSALS or error == "timeout" or status == 408:
        refused(pace, now, retry_after, status, probe)
    else:
        failed(pace, now, status, probe, connection_error=error in ("connect", "network"), interval=probe_interval)
    if pace.circuit == OPEN:
        pace.probe_at = max(pace.probe_at, now + probe_interval)


def ceilings(settings: Settings) -> Callable[[str], float]:
    """host -> the most it is paced at (``CALLBACK_HOST_RATES``, ``CALLBACK_HOST_RATE``, ``CALLBACK_RATE``)."""
    named = dict(settings.host_rates)
    return lambda host: ceiling_of(host, settings.rate, settings.host_rate, named)


def ceiling_of(host: str, global_rate: float, host_rate: float, host_rates: dict[str, float]) -> float:
    """The most a host is paced at: its named rate, else the default host rate, never above the global rate."""
    named = host_rates.get(host)
    ceiling = named if named is not None else host_rate if host_rate > 0 else global_rate
    return min(global_rate, ceiling)
