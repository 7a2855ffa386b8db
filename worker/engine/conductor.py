"""The shard leaderships of one worker process, all on its one event loop.

A ``lead_callbacks(shard)`` message asks the process that receives it to lead
a shard. The first such term in a process is *hosted* by the actor call that
started it: that call returns when the process leads nothing any more. Calls
that arrive meanwhile add their term to the same event loop and return at
once, so a process leading several shards occupies one Dramatiq worker thread,
not one per shard.

Where a term runs is decided by :mod:`.spread` over the live fleet (which the
process's lease watch keeps current in :attr:`Conductor.fleet`): a declined
shard is sent again for another process, and a process leading two or more
shards above the least-loaded one hands one over.

A shard at or past ``CALLBACK_SHARDS`` (the count was lowered) is led in burst
mode: until it is empty, so what producers sent it before the change drains.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..config.settings import Settings
from ..streams.fleet import process_name
from .leader import LeaderExit
from .observer import DeliveryObserver
from .spread import may_take, should_hand_over
from .term import lead

log = logging.getLogger(__name__)

Resend = Callable[[int, int], None]  # (shard, times declined): send the shard's message again


class Conductor:
    """This process's terms, by shard; ``resend`` puts a shard's message back for any process to take."""

    def __init__(
        self,
        settings: Settings,
        *,
        resend: Resend,
        should_stop: Callable[[], bool],
        observer: Callable[[int], DeliveryObserver] = lambda shard: DeliveryObserver(),
    ) -> None:
        self.settings = settings
        self.here = process_name()
        self.fleet: dict[str, int] = {}  # live process -> shards led; replaced whole by the lease watch
        self._resend = resend
        self._should_stop = should_stop
        self._observer = observer
        self._terms: dict[int, asyncio.Task[LeaderExit | None]] = {}
        self._leaving: set[int] = set()  # shards being handed over
        self._hosting = False

    @property
    def shards(self) -> list[int]:
        """The shards this process leads (or is starting or stopping to lead)."""
        return sorted(self._terms)

    async def lead(self, shard: int, declined: int = 0) -> str:
        """Lead ``shard`` here if the fleet's spread allows; returns what happened (for the actor's log)."""
        if shard in self._terms:
            return "already led here"
        if not may_take(self.here, {**self.fleet, self.here: len(self._terms)}, declined):
            self._resend(shard, declined + 1)
            return "declined: a live process leads fewer shards"
        self._terms[shard] = asyncio.create_task(self._term(shard), name=f"shard-{shard}")
        if self._hosting:
            return "joined"
        self._hosting = True
        try:
            while self._terms:
                await asyncio.wait(set(self._terms.values()))
        finally:
            self._hosting = False
        return "ended"

    def balance(self) -> None:
        """Hand one shard over if this process leads too many (called on the loop by the lease watch)."""
        active = [shard for shard in self._terms if shard not in self._leaving]
        if len(active) > 1 and should_hand_over(self.here, {**self.fleet, self.here: len(active)}):
            shard = max(active)
            log.info("handing shard %d over: another live process leads fewer", shard)
            self._leaving.add(shard)

    async def _term(self, shard: int) -> LeaderExit | None:
        draining = shard >= self.settings.shards
        exit: LeaderExit | None = None
        try:
            exit = await lead(
                self.settings,
                shard=shard,
                should_stop=lambda: self._should_stop() or shard in self._leaving,
                burst=draining,
                observer=self._observer(shard),
            )
        except Exception:  # a bug must not end the process's other terms; the shard is sent again
            log.exception("leading shard %d failed", shard)
        finally:
            del self._terms[shard]
            handed_over = shard in self._leaving
            self._leaving.discard(shard)
        if self._should_stop():
            return exit
        if handed_over or exit is None or exit.reason in ("lost", "stopped"):
            self._resend(shard, 0)  # keep a candidate in circulation (another process, if spread says so)
        return exit
