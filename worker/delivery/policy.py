"""Delivery policy as pure functions: what an HTTP outcome means and what happens next.

Nothing here does I/O or reads a clock; callers pass ``now`` and a random
source, so every rule is table-tested.
"""

from __future__ import annotations

import email.utils
import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass


class Verdict(enum.Enum):
    """What one attempt's outcome says about the callback."""

    DELIVERED = "delivered"
    RETRY = "retry"
    FINAL = "final"


class Action(enum.Enum):
    """What happens to the callback after an attempt; the value is the callback's state then."""

    DELIVERED = "delivered"  # acknowledged: no further attempt
    RETRY = "retrying"
    DEAD = "dead"


# Transport error kinds the sender reports that no retry can fix: "blocked"
# (the SSRF guard) stays blocked, an invalid URL stays invalid. The others
# ("timeout", "connect", "network", "protocol") are retried.
FINAL_ERRORS = frozenset({"blocked", "invalid_url"})


def classify(status: int | None, error: str | None = None) -> Verdict:
    """Classify an attempt by HTTP status (or transport error kind when there is no status).

    2xx delivered; 408, 429 and 5xx retried; any other status final (3xx is
    final too: redirects are never followed). Network errors and timeouts are
    retried; a refusal by the SSRF guard is final.
    """
    if status is None:
        return Verdict.FINAL if error in FINAL_ERRORS else Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in (408, 429) or 500 <= status < 600:
        return Verdict.RETRY
    return Verdict.FINAL


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or HTTP-date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also accepts '²', which float() rejects
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def compute_backoff(
    attempts_made: int, schedule: Sequence[float], *, jitter: float = 0.2, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before attempt ``attempts_made + 1``.

    The n-th retry waits ``schedule[n-1]`` (the last entry repeats), stretched by
    up to ``jitter`` so retries of one burst do not return as a burst.
    """
    if attempts_made < 1:
        raise ValueError("attempts_made starts at 1 (the attempt that just failed)")
    base = schedule[min(attempts_made, len(schedule)) - 1]
    return base * (1.0 + jitter * rand())


def retry_pause(failures: int, *, first: float = 0.05, cap: float = 2.0) -> float:
    """Seconds a loop waits after ``failures`` consecutive failures of Redis or the database.

    Doubles from ``first`` up to ``cap``: the leader's and the status writer's
    loops both use it (with their own caps), so an outage costs few round trips.
    """
    return min(cap, first * 2.0 ** min(max(failures, 0), 30))


@dataclass(frozen=True)
class Decision:
    """The next step for a callback after an attempt."""

    action: Action
    delay: float = 0.0
    reason: str = ""


def decide(
    *,
    status: int | None,
    error: str | None,
    attempts_made: int,
    max_attempts: int,
    schedule: Sequence[float],
    retry_after: float | None = None,
    retry_after_max: float = 3600.0,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """Deliver, retry after a delay, or dead-letter with a reason.

    ``Retry-After`` is honoured up to ``retry_after_max``: the retry waits at
    least that long, and never less than the backoff schedule says.
    """
    verdict = classify(status, error)
    if verdict is Verdict.DELIVERED:
        return Decision(Action.DELIVERED)
    what = f"HTTP {status}" if status is not None else (error or "error")
    if verdict is Verdict.FINAL:
        return Decision(Action.DEAD, reason=f"final: {what}")
    if attempts_made >= max_attempts:
        return Decision(Action.DEAD, reason=f"exhausted: {attempts_made} attempts, last {what}")
    delay = compute_backoff(attempts_made, schedule, rand=rand)
    if retry_after is not None:
        delay = max(delay, min(retry_after, retry_after_max))
    return Decision(Action.RETRY, delay=delay, reason=what)
