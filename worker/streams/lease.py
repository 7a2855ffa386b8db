"""The leader lease: one leader per queue, a random token, renewal and a fencing epoch."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

import redis.asyncio as aioredis

from .keys import Keys
from .scripts import source


@dataclass(frozen=True)
class LeaseState:
    """The answer of one lease operation."""

    held: bool
    epoch: int
    remaining: float = 0.0


class LeaderLease:
    """A lease held under a private token; only the holder can renew or release it.

    Every acquisition increments the queue's fencing epoch, so work done under
    an older epoch can be told apart from the current leader's.
    """

    def __init__(self, client: aioredis.Redis, keys: Keys, ttl: float, token: str | None = None) -> None:
        self._keys = keys
        self._ttl_ms = int(ttl * 1000)
        self.token = token or secrets.token_hex(16)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{self.token[:8]}"
        self.epoch = 0
        self._script = client.register_script(source("lease"))

    async def _call(self, op: str) -> LeaseState:
        keys = [self._keys.lease, self._keys.lease_info, self._keys.epoch]
        reply = await self._script(keys=keys, args=[op, self.token, self._ttl_ms, self.holder])
        held, epoch = bool(int(reply[0])), int(reply[1])
        remaining = int(reply[2]) / 1000 if len(reply) > 2 else 0.0
        if held:
            self.epoch = epoch
        return LeaseState(held, epoch, max(remaining, 0.0))

    async def acquire(self) -> LeaseState:
        """Take the lease if free (or already ours)."""
        return await self._call("acquire")

    async def renew(self) -> LeaseState:
        """Extend the lease by its TTL if we still hold it."""
        return await self._call("renew")

    async def release(self) -> LeaseState:
        """Give the lease up if we hold it, so the next leader starts at once."""
        return await self._call("release")
