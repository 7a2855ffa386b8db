"""From an attempt's result to what it writes: its decision, its status updates and its settle record.

The one place that says what an attempt means, for queued delivery (the
leader, through its settler) and immediate delivery alike:

- :func:`sending`: the update that marks an attempt as started;
- :func:`judge`: the policy's :class:`~worker.delivery.policy.Decision` for a
  result, with the settings in force, as an :class:`Outcome` that also carries
  the attempt's status updates and its error text;
- :func:`record_outcome`: the outcome as a settle record (ack, retry or dead
  letter) and its status updates, added to a ``settle.lua`` call;
- :func:`record_poison`: the dead letter of an entry that keeps crashing its leaders.

No I/O: the leader and immediate delivery do the sending and the writing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..config.settings import Settings
from ..delivery.policy import Action, Decision, decide, parse_retry_after
from ..delivery.sender import AttemptResult
from ..delivery.targets import describe
from ..streams import status
from ..streams.entry import CallbackEntry
from ..streams.settlement import Settlement
from ..streams.status import StatusUpdate

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 500  # of the error text kept in the callbacks row


@dataclass(frozen=True)
class Outcome:
    """An attempt judged: the ``entry`` as it was sent, its ``result``, the ``decision`` and when (``at``, ms)."""

    entry: CallbackEntry
    result: AttemptResult
    decision: Decision
    at: int

    @property
    def attempt(self) -> int:
        """Which attempt this was (1-based)."""
        return self.entry.attempts + 1

    @property
    def state(self) -> str:
        """The callback's state after it: ``delivered``, ``retrying`` or ``dead``."""
        return self.decision.action.value

    @property
    def error(self) -> str | None:
        """The error text recorded for the callback (``None`` when delivered)."""
        if self.decision.action is Action.DELIVERED:
            return None
        return f"{self.decision.reason}: {self.result.detail}"[:MAX_ERROR_CHARS]

    @property
    def retry_in(self) -> float | None:
        """Seconds until the next attempt, when there is one."""
        return self.decision.delay if self.decision.action is Action.RETRY else None

    def updates(self) -> list[StatusUpdate]:
        """The status updates that record it: the callback's new state and the attempt's own row."""
        retry_in = self.retry_in
        return status.callback_attempted(
            self.entry.callback_id,
            attempt=self.attempt,
            state=self.state,
            status_code=self.result.status,
            error=self.error,
            started_at=int(self.result.started_at * 1000),
            duration_ms=self.result.duration * 1000,
            outcome=self.state,
            next_attempt_at=None if retry_in is None else self.at + int(retry_in * 1000),
            at=self.at,
            generation=self.entry.generation,
        )


def sending(entry: CallbackEntry, at: int) -> StatusUpdate:
    """The status update of ``entry``'s next attempt starting at ``at`` (ms)."""
    return status.callback_sending(entry.callback_id, entry.attempts + 1, at, entry.generation)


def judge(settings: Settings, entry: CallbackEntry, result: AttemptResult) -> Outcome:
    """What ``result`` (of ``entry``'s next attempt) means under ``settings``: deliver, retry or dead-letter."""
    now = time.time()
    decision = decide(
        status=result.status,
        error=result.error,
        attempts_made=entry.attempts + 1,
        max_attempts=settings.max_attempts,
        schedule=settings.retry_schedule,
        retry_after=parse_retry_after(result.retry_after, now),
        retry_after_max=settings.retry_after_max,
    )
    return Outcome(entry, result, decision, int(now * 1000))


def record_outcome(settlement: Settlement, outcome: Outcome) -> None:
    """Add to ``settlement``: the outcome's status updates, and an ack, a retry or a dead letter."""
    entry, decision = outcome.entry, outcome.decision
    settlement.record(outcome.updates())
    if decision.action is Action.DELIVERED:
        settlement.ack(entry)
    elif decision.action is Action.RETRY:
        settlement.delay(entry.next_attempt(), decision.delay, "retried")
        log.info(
            "callback %s to %s: %s, retry in %.1fs",
            entry.callback_id,
            describe(entry.url),
            decision.reason,
            decision.delay,
        )
    else:
        result = outcome.result
        dead = {
            "reason": decision.reason,
            "status": "" if result.status is None else str(result.status),
            "error": result.detail,
            "dead_ms": str(outcome.at),
        }
        settlement.dead(entry.next_attempt(), dead)
        log.warning("callback %s to %s dead-lettered: %s", entry.callback_id, describe(entry.url), decision.reason)


def record_poison(settlement: Settlement, entry: CallbackEntry, times: int, limit: int, now_ms: int) -> None:
    """Dead-letter an entry read ``times`` times without being settled (it keeps crashing its leader)."""
    reason = f"poison: read {times} times without being settled (CALLBACK_MAX_DELIVERIES={limit})"
    record_unattempted(settlement, entry, reason, now_ms)
    log.error("callback %s dead-lettered: %s", entry.callback_id, reason)


def record_expired(settlement: Settlement, entry: CallbackEntry, why: str, max_age: float, now_ms: int) -> None:
    """Dead-letter an entry its host held back past ``CALLBACK_MAX_AGE`` (an open circuit, a pause)."""
    reason = f"host unavailable: {why} for longer than CALLBACK_MAX_AGE={max_age:g}s"
    record_unattempted(settlement, entry, reason, now_ms)
    log.warning("callback %s dead-lettered: %s", entry.callback_id, reason)


def record_unattempted(settlement: Settlement, entry: CallbackEntry, reason: str, now_ms: int) -> None:
    """Dead-letter ``entry`` for ``reason`` without an attempt's outcome; its row goes ``dead`` too."""
    settlement.dead(entry, {"reason": reason, "status": "", "error": "", "dead_ms": str(now_ms)})
    settlement.record([status.callback_poisoned(entry.callback_id, reason, now_ms, entry.generation)])
