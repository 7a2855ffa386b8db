"""The Redis side of pacing: ``gcra.lua`` reserves slots atomically on the Redis clock."""

from __future__ import annotations

import redis.asyncio as aioredis

from ..pacing import Reservation
from .scripts import source

MICRO = 1_000_000


class Pace:
    """A shared global rate for one queue: every leader reserves start slots here."""

    def __init__(self, client: aioredis.Redis, key: str, rate: float) -> None:
        self._key = key
        self._interval_us = max(1, round(MICRO / rate))
        self._script = client.register_script(source("gcra"))

    async def reserve(self, want: int, horizon: float) -> Reservation:
        """Reserve up to ``want`` slots whose first starts within ``horizon`` seconds."""
        granted, offset_us = await self._script(keys=[self._key], args=[self._interval_us, want, int(horizon * MICRO)])
        return Reservation(int(granted), int(offset_us) / MICRO, self._interval_us / MICRO)
