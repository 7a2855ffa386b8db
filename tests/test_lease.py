"""The fenced lease (leader and status writer, sync and async fronts), against real Redis."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from worker.errors import LeaseLost
from worker.streams.client import async_client, sync_client
from worker.streams.lease import AsyncLease, Holder, Lease, holder_name, holder_of, lapsed, parse_holder
from worker.streams.stream import CallbackStream


def run(coro):
    return asyncio.run(coro)


def test_one_holder_at_a_time_and_only_the_holder_renews_or_releases(redis_url, keys, rclient):
    async def scenario():
        client = async_client(redis_url)
        try:
            lease_keys = keys.leader_lease
            first, second = AsyncLease(client, lease_keys, ttl=5), AsyncLease(client, lease_keys, ttl=5)
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
            lease = AsyncLease(client, keys.leader_lease, ttl=1)
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
            old = AsyncLease(client, keys.leader_lease, ttl=5)
            await old.acquire()
            await client.delete(keys.lease)  # its lease lapsed during, say, a long pause
            new = AsyncLease(client, keys.leader_lease, ttl=5)
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


def test_the_writer_lease_has_its_own_fencing_epoch_and_info(redis_url, keys, rclient):
    client = sync_client(redis_url)
    try:
        first, second = Lease(client, keys.writer_lease, ttl=5), Lease(client, keys.writer_lease, ttl=5)
        assert first.acquire().held and first.epoch == 1
        refused = second.acquire()
        assert refused.held is False and refused.epoch == 1 and 0 < refused.remaining <= 5
        assert rclient.get(keys.status_lease) == first.token  # the lease key is unchanged: {q}:writer
        assert first.release().held
        assert second.acquire().held and second.epoch == 2
        assert rclient.get(keys.writer_lease.epoch) == "2"
        assert rclient.hget(keys.writer_lease.info, "holder") == second.holder
        assert rclient.get(keys.epoch) is None  # the leader's epoch is another key
        assert holder_of(client, keys.writer_lease) == second.holder
    finally:
        client.close()


def test_the_writer_lease_excludes_an_earlier_versions_writer_and_is_excluded_by_it(redis_url, keys, rclient):
    """The previous status writer took ``{q}:writer`` with a redis-py lock (SET NX PX, its name as token)."""
    earlier = rclient.lock(keys.status_lease, timeout=5, blocking=False, thread_local=False)
    client = sync_client(redis_url)
    try:
        assert earlier.acquire(blocking=False, token="old-host:1:0123456789abcdef")
        lease = Lease(client, keys.writer_lease, ttl=5)
        assert lease.acquire().held is False
        assert holder_of(client, keys.writer_lease) == "old-host:1:0123456789abcdef"  # no info hash: the value
        earlier.release()
        assert lease.acquire().held
        assert not earlier.acquire(blocking=False, token="old-host:1:0123456789abcdef")
        lease.release()
        assert earlier.acquire(blocking=False, token="old-host:1:0123456789abcdef")
        # The info hash now describes a writer that is gone: the lease value names the holder.
        assert holder_of(client, keys.writer_lease) == "old-host:1:0123456789abcdef"
        assert lease.renew().held is False
        earlier.release()
        assert holder_of(client, keys.writer_lease) is None
    finally:
        client.close()


def test_both_fronts_run_one_protocol(redis_url, keys):
    async def scenario():
        aclient, client = async_client(redis_url), sync_client(redis_url)
        try:
            leader, ops = AsyncLease(aclient, keys.leader_lease, ttl=5), Lease(client, keys.leader_lease, ttl=5)
            assert (await leader.acquire()).held and leader.epoch == 1
            refused = ops.acquire()
            assert refused.held is False and refused.epoch == 1 and 0 < refused.remaining <= 5
            assert ops.renew().held is False and ops.release().held is False
            assert holder_of(client, keys.leader_lease) == leader.holder
            assert (await leader.release()).held
            assert ops.acquire().held and ops.epoch == 2
            refused = await leader.renew()
            assert refused.held is False and refused.epoch == 2
            assert ops.release().held
        finally:
            client.close()
            await aclient.aclose()

    run(scenario())


def test_a_holder_name_reads_back():
    holder = parse_holder(holder_name("0123456789abcdef"))
    assert holder == Holder(socket.gethostname(), os.getpid(), "01234567")
    assert holder.here
    assert parse_holder(b"elsewhere:12:abc") == Holder("elsewhere", 12, "abc")
    assert not Holder("elsewhere", os.getpid(), "abc").here


@pytest.mark.parametrize(
    "name",
    [
        None,
        "",
        "token",
        "host:1",
        "host:1:abc:extra",
        ":1:abc",
        "host::abc",
        "host:1:",
        "host:x1:abc",
        "host:-1:abc",
        "host:\u0661:abc",  # a non-ASCII digit
        b"\xff:1:abc",
    ],
)
def test_a_malformed_holder_parses_to_none(name):
    assert parse_holder(name) is None


@pytest.mark.parametrize(
    ("last_renewed", "now", "ttl", "expected"),
    [
        (100.0, 100.0, 10.0, False),  # just renewed
        (100.0, 109.9, 10.0, False),  # within the TTL
        (100.0, 110.0, 10.0, True),  # a whole TTL without renewal
        (100.0, 250.0, 10.0, True),
        (100.0, 99.0, 10.0, False),  # a clock read before the renewal
    ],
)
def test_a_lease_lapses_after_a_whole_ttl_without_renewal(last_renewed, now, ttl, expected):
    assert lapsed(last_renewed, now, ttl) is expected
