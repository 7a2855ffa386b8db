"""How the leader's loops wait after Redis failed them: logged, doubling up to a cap (:func:`retry_pause`)."""

from __future__ import annotations

import asyncio
import logging

from ..delivery.policy import retry_pause

log = logging.getLogger(__name__)

MAX_BACKOFF = 2.0  # seconds: an outage costs few round trips, a recovery is noticed within this


async def back_off(what: str, error: BaseException, failures: int) -> None:
    """Log that ``what`` failed for the ``failures``-th time in a row, and wait before it tries again."""
    delay = retry_pause(failures, cap=MAX_BACKOFF)
    log.warning("%s failed (%s: %s); retrying in %.2fs", what, type(error).__name__, error, delay)
    await asyncio.sleep(delay)
