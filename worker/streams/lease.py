"""The fenced lease of the leader and of the status writer: one holder, renewal, a fencing epoch.

One protocol (``lua/lease.lua``: its KEYS, ARGV and reply are built and read
once, in the operation :func:`lease_call`) with two fronts that only run it
(see :mod:`.protocol`): :class:`Lease` over a blocking client (the status
writer, operators) and :class:`AsyncLease` over an asyncio client (the
leader). A holder is named ``host:pid:token prefix`` (:func:`holder_name`,
read back by :func:`parse_holder`); :func:`lapsed` is the one rule for when a
holder that could not renew must assume another may hold the lease.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from .client import text
from .keys import LeaseKeys
from .protocol import AsyncDriver, Batch, Command, Operation, Script, SyncDriver

TOKEN_SHOWN = 8  # characters of the token in a holder name: enough to tell holders apart, not to renew


@dataclass(frozen=True)
class LeaseState:
    """The answer of one lease operation: whether the caller holds it, the epoch, the holder's remaining TTL."""

    held: bool
    epoch: int
    remaining: float = 0.0


@dataclass(frozen=True)
class Holder:
    """A lease holder's name, read back: its host, its process id and its token prefix."""

    host: str
    pid: int
    token: str

    @property
    def here(self) -> bool:
        """Whether the holder is this process."""
        return self.host == socket.gethostname() and self.pid == os.getpid()


def holder_name(token: str) -> str:
    """This process's holder name for ``token``: ``host:pid:token prefix`` (consumer name and info hash)."""
    return f"{socket.gethostname()}:{os.getpid()}:{token[:TOKEN_SHOWN]}"


def parse_holder(name: str | bytes | None) -> Holder | None:
    """The holder named ``name``, or ``None`` when it is missing or not ``host:pid:token``."""
    if name is None:
        return None
    parts = text(name).split(":")
    if len(parts) != 3 or "\ufffd" in parts[0]:  # not a name this code wrote (not UTF-8)
        return None
    host, pid, token = parts
    if not host or not token or not (pid.isascii() and pid.isdigit()):
        return None
    return Holder(host, int(pid), token)


def lapsed(last_renewed: float, now: float, ttl: float) -> bool:
    """Whether a whole ``ttl`` passed since the last renewal: another may hold the lease from then on."""
    return now - last_renewed >= ttl


def lease_call(keys: LeaseKeys, op: str, token: str, ttl: float, holder: str) -> Operation[LeaseState]:
    """One ``lease.lua`` call (``op``: acquire, renew or release) and its answer."""
    reply = yield Script("lease", (keys.lease, keys.info, keys.epoch), (op, token, int(ttl * 1000), holder))
    remaining = int(reply[2]) / 1000 if len(reply) > 2 else 0.0
    return LeaseState(bool(int(reply[0])), int(reply[1]), max(remaining, 0.0))


def current_holder(keys: LeaseKeys) -> Operation[str | None]:
    """The name of whoever holds the lease now, ``None`` when it is free.

    Read from the info hash while that describes the current token; otherwise
    the lease value itself: a status writer of an earlier version stored its
    name there and kept no info hash (a rolling deploy).
    """
    value, name = yield Batch((Command("get", (keys.lease,)), Command("hget", (keys.info, "holder"))))
    if value is None:
        return None
    holder = parse_holder(name)
    if holder is not None and text(value).startswith(holder.token):
        return text(name)
    return text(value)


class _Holding:
    """What both fronts share: the lease's keys and TTL, this holder's token, name and last epoch."""

    def __init__(self, keys: LeaseKeys, ttl: float, token: str | None) -> None:
        self.keys = keys
        self.ttl = ttl
        self.token = token or secrets.token_hex(16)
        self.holder = holder_name(self.token)
        self.epoch = 0

    def _call(self, op: str) -> Operation[LeaseState]:
        state = yield from lease_call(self.keys, op, self.token, self.ttl, self.holder)
        if state.held:
            self.epoch = state.epoch
        return state


class Lease(_Holding):
    """A lease held under a private token, over a blocking client; only the holder renews or releases it.

    Every acquisition increments the lease's fencing epoch, so work done under
    an older epoch can be told apart from the current holder's.
    """

    def __init__(self, client: redis.Redis, keys: LeaseKeys, ttl: float, token: str | None = None) -> None:
        super().__init__(keys, ttl, token)
        self._driver = SyncDriver(client)

    def acquire(self) -> LeaseState:
        """Take the lease if free (or already ours)."""
        return self._driver.run(self._call("acquire"))

    def renew(self) -> LeaseState:
        """Extend the lease by its TTL if we still hold it."""
        return self._driver.run(self._call("renew"))

    def release(self) -> LeaseState:
        """Give the lease up if we hold it, so the next holder starts at once."""
        return self._driver.run(self._call("release"))


class AsyncLease(_Holding):
    """:class:`Lease` over an asyncio client (the leader's)."""

    def __init__(self, client: aioredis.Redis, keys: LeaseKeys, ttl: float, token: str | None = None) -> None:
        super().__init__(keys, ttl, token)
        self._driver = AsyncDriver(client)

    async def acquire(self) -> LeaseState:
        """Take the lease if free (or already ours)."""
        return await self._driver.run(self._call("acquire"))

    async def renew(self) -> LeaseState:
        """Extend the lease by its TTL if we still hold it."""
        return await self._driver.run(self._call("renew"))

    async def release(self) -> LeaseState:
        """Give the lease up if we hold it, so the next holder starts at once."""
        return await self._driver.run(self._call("release"))


def holder_of(client: redis.Redis, keys: LeaseKeys) -> str | None:
    """:func:`current_holder` over a blocking client (operators, the writer's placement)."""
    return SyncDriver(client).run(current_holder(keys))
