"""The leader lease and its fencing epoch, against real Redis."""

from __future__ import annotations

import asyncio

import pytest

from worker.errors import LeaseLost
from worker.streams.client import async_client
from worker.streams.lease import LeaderLease
from worker.streams.stream import CallbackStream


def run(coro):
    return asyncio.run(coro)


def test_one_holder_at_a_time_and_only_the_holder_renews_or_releases(redis_url, keys, rclient):
    async def scenario():
        client = async_client(redis_url)
        try:
            first, second = LeaderLease(client, keys, ttl=5), LeaderLease(client, keys, ttl=5)
            results = await asyncio.gather(first.acquire(), second.acquire())
            assert sorted(r.held for r in results) == [False, True]
            holder, other = (first, second) if results[0].held else (second, first)
            assert (await other.renew()).held is False
            assert (await other.release()).held is False
            refused = await other.acquire()
            assert refused.held is False and 0 < refused.remaining <= 5
            assert (await holder.renew()).held is True
            assert (await holder.acquire()).held is True  # re-entrant for the holder, same epoch
            assert holder.epoch == 1
            assert (await holder.release()).held is True
            taken = await other.acquire()
            assert taken.held is True and taken.epoch == 2  # every acquisition is a new epoch
        finally:
            await client.aclose()

    run(scenario())
    info = rclient.hgetall(keys.lease_info)
    assert info["epoch"] == "2" and info["holder"].count(":") == 2


def test_the_lease_expires_after_its_ttl(redis_url, keys, rclient):
    async def scenario():
        client = async_client(redis_url)
        try:
            lease = LeaderLease(client, keys, ttl=1)
            await lease.acquire()
            assert 0 < rclient.pttl(keys.lease) <= 1000
        finally:
            await client.aclose()

    run(scenario())


def test_a_deposed_leader_is_fenced_off_from_reclaiming(redis_url, keys):
    async def scenario():
        client = async_client(redis_url)
        try:
            stream = CallbackStream(client, keys)
            await stream.ensure_group()
            old = LeaderLease(client, keys, ttl=5)
            await old.acquire()
            await client.delete(keys.lease)  # its lease lapsed during, say, a long pause
            new = LeaderLease(client, keys, ttl=5)
            await new.acquire()

            with pytest.raises(LeaseLost):
                await stream.reclaim(old.holder, 0, fence=(old.token, old.epoch))
            assert (await stream.reclaim(new.holder, 0, fence=(new.token, new.epoch))).entries == []
            # Same token but a stale epoch is fenced too.
            with pytest.raises(LeaseLost):
                await stream.reclaim(new.holder, 0, fence=(new.token, new.epoch - 1))
        finally:
            await client.aclose()

    run(scenario())
