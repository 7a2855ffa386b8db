"""How the leader's loops wait: after Redis failed them (logged, doubling up to a cap), and for an event."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..delivery.policy import retry_pause

log = logging.getLogger(__name__)

MAX_BACKOFF = 2.0  # seconds: an outage costs few round trips, a recovery is noticed within this


async def back_off(what: str, error: BaseException, failures: int) -> None:
    """Log that ``what`` failed for the ``failures``-th time in a row, and wait before it tries again."""
    delay = retry_pause(failures, cap=MAX_BACKOFF)
    log.warning("%s failed (%s: %s); retrying in %.2fs", what, type(error).__name__, error, delay)
    await asyncio.sleep(delay)


async def wait_for_event(event: asyncio.Event, seconds: float | None) -> None:
    """Until ``event`` is set or ``seconds`` pass (``None``: no limit).

    ``asyncio.timeout``, not ``asyncio.wait_for``: on Python 3.11 the latter swallows a
    cancellation that arrives as the event is set, and a cancelled loop would run on.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
