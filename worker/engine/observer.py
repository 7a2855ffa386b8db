"""Hooks the leader calls as deliveries happen; metrics and status recording plug in here."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..delivery.policy import Decision
    from ..delivery.sender import AttemptResult
    from ..streams.entry import CallbackEntry
    from ..streams.stream import QueueSnapshot


class DeliveryObserver:
    """Does nothing; subclass and override what you need. Methods must not block or raise."""

    def sending(self, entry: CallbackEntry) -> None:
        """An attempt for ``entry`` is about to start."""

    def attempted(self, entry: CallbackEntry, result: AttemptResult, decision: Decision) -> None:
        """An attempt ended with ``result``; ``decision`` is what happens next."""

    def leading(self, namespace: str, epoch: int, leads: bool) -> None:
        """This process started (``leads``) or stopped leading ``namespace`` under ``epoch``."""

    def waited_for_pace(self, seconds: float) -> None:
        """The dispatcher waited ``seconds`` for global start slots."""

    def set_aside(self, count: int) -> None:
        """``count`` stream entries that are not callbacks went to the dead letters."""

    def deferred(self, entry: CallbackEntry) -> None:
        """``entry`` was parked because its host had no free slot and a full buffer."""

    def sampled(self, snapshot: QueueSnapshot, in_flight: int, saturated_hosts: int) -> None:
        """A periodic look at the queue (every housekeeping pass of the leader)."""

    def hosts_sampled(self, open_circuits: int, held: int) -> None:
        """A periodic look at the hosts: circuits not closed, hosts held back (a pause, Retry-After, a circuit)."""
