"""What an attempt's outcome writes: the settle record and the status updates, decided without I/O."""

from __future__ import annotations

import logging

from ..delivery.policy import Action, Decision
from ..delivery.sender import AttemptResult
from ..delivery.targets import describe
from ..streams import status
from ..streams.entry import CallbackEntry
from ..streams.settlement import Settlement

log = logging.getLogger(__name__)


def record_outcome(
    settlement: Settlement, entry: CallbackEntry, result: AttemptResult, decision: Decision, now_ms: int
) -> None:
    """Add to ``settlement``: the attempt's status updates, and an ack, a retry or a dead letter."""
    settlement.record(
        status.callback_attempted(
            entry.callback_id,
            attempt=entry.attempts + 1,
            state=decision.action.value,
            status_code=result.status,
            error=None if decision.action is Action.DONE else f"{decision.reason}: {result.detail}"[:500],
            started_at=int(result.started_at * 1000),
            duration_ms=result.duration * 1000,
            outcome=decision.action.value,
            next_attempt_at=now_ms + int(decision.delay * 1000) if decision.action is Action.RETRY else None,
            at=now_ms,
        )
    )
    if decision.action is Action.DONE:
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
        settlement.dead(entry.next_attempt(), dead_fields(decision.reason, result, now_ms))
        log.warning("callback %s to %s dead-lettered: %s", entry.callback_id, describe(entry.url), decision.reason)


def record_poison(settlement: Settlement, entry: CallbackEntry, times: int, limit: int, now_ms: int) -> None:
    """Dead-letter an entry read ``times`` times without being settled (it keeps crashing its leader)."""
    reason = f"poison: read {times} times without being settled (CALLBACK_MAX_DELIVERIES={limit})"
    settlement.dead(entry, {"reason": reason, "status": "", "error": "", "dead_ms": str(now_ms)})
    settlement.record(
        [status.StatusUpdate("callbacks", entry.callback_id, now_ms, {"status": "dead", "last_error": reason})]
    )
    log.error("callback %s dead-lettered: %s", entry.callback_id, reason)


def dead_fields(reason: str, result: AttemptResult, now_ms: int) -> dict[str, str]:
    """The dead-letter record of a callback's last attempt."""
    return {
        "reason": reason,
        "status": "" if result.status is None else str(result.status),
        "error": result.detail,
        "dead_ms": str(now_ms),
    }
