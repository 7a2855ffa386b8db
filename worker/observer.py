"""Hooks the leader calls as deliveries happen; metrics and status recording plug in here."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .delivery.policy import Decision
    from .delivery.sender import AttemptResult
    from .streams.entry import CallbackEntry


class DeliveryObserver:
    """Does nothing; subclass and override what you need. Methods must not block or raise."""

    def sending(self, entry: CallbackEntry) -> None:
        """An attempt for ``entry`` is about to start."""

    def attempted(self, entry: CallbackEntry, result: AttemptResult, decision: Decision) -> None:
        """An attempt ended with ``result``; ``decision`` is what happens next."""


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
