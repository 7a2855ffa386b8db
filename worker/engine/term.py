"""Wires a leader to its connections for one leadership, and tears them down after."""

from __future__ import annotations

from collections.abc import Callable

from ..config.settings import Settings
from ..delivery.sender import Sender
from ..delivery.signing import SigningKeys
from ..streams.client import async_client
from .leader import Leader, LeaderExit
from .observer import DeliveryObserver


async def lead(
    settings: Settings,
    *,
    shard: int = 0,
    should_stop: Callable[[], bool] = lambda: False,
    burst: bool = False,
    observer: DeliveryObserver | None = None,
) -> LeaderExit:
    """Try to lead the queue's ``shard``; deliver until stopped, deposed or (``burst``) idle."""
    client = async_client(settings.redis_url)
    sender = Sender(settings, SigningKeys.from_settings(settings))
    try:
        leader = Leader(settings, client, sender, shard=shard, observer=observer, should_stop=should_stop, burst=burst)
        return await leader.run()
    finally:
        await sender.close()
        await client.aclose()
