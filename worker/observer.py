"""Hooks the leader calls as deliveries happen; metrics and status recording plug in here."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .delivery.policy import Decision
    from .delivery.sender import AttemptResult
    from .streams.entry import CallbackEntry
    from .streams.stream import QueueSnapshot


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

    def deferred(self, entry: CallbackEntry) -> None:
        """``entry`` was parked because its host had no free slot and a full buffer."""

    def sampled(self, snapshot: QueueSnapshot, in_flight: int, saturated_hosts: int) -> None:
        """A periodic look at the queue (every housekeeping pass of the leader)."""


class Observers(DeliveryObserver):
    """Fans each event out to several observers."""

    def __init__(self, *observers: DeliveryObserver) -> None:
        self._observers = observers

    def sending(self, entry: CallbackEntry) -> None:
        for observer in self._observers:
            observer.sending(entry)

    def attempted(self, entry: CallbackEntry, result: AttemptResult, decision: Decision) -> None:
        for observer in self._observers:
            observer.attempted(entry, result, decision)

    def leading(self, namespace: str, epoch: int, leads: bool) -> None:
        for observer in self._observers:
            observer.leading(namespace, epoch, leads)

    def waited_for_pace(self, seconds: float) -> None:
        for observer in self._observers:
            observer.waited_for_pace(seconds)

    def deferred(self, entry: CallbackEntry) -> None:
        for observer in self._observers:
            observer.deferred(entry)

    def sampled(self, snapshot: QueueSnapshot, in_flight: int, saturated_hosts: int) -> None:
        for observer in self._observers:
            observer.sampled(snapshot, in_flight, saturated_hosts)
