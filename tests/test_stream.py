"""The stream protocol against real Redis: settling is exactly-once per entry; both fronts claim alike."""

from __future__ import annotations

import asyncio

import pytest

from worker.errors import LeaseLost
from worker.streams.client import async_client, sync_client
from worker.streams.entry import CallbackEntry
from worker.streams.keys import GROUP
from worker.streams.settlement import Settlement
from worker.streams.stream import CallbackStream, SyncCallbackStream


@pytest.mark.parametrize("kind", ["delay", "dead", "again"])
def test_an_entry_settled_by_someone_else_first_gets_no_second_copy(redis_url, keys, rclient, kind):
    async def scenario() -> tuple[int, int]:
        client = async_client(redis_url)
        try:
            stream = CallbackStream(client, keys)
            await stream.ensure_group()
            await client.xadd(keys.stream, CallbackEntry("msg_1", "https://example.com/", "{}").fields())
            (entry,) = (await stream.read("old-leader", 10, 0.1)).entries
            first, second = Settlement(), Settlement()
            for settlement in (first, second):  # e.g. a deposed leader and its successor
                if kind == "delay":
                    settlement.delay(entry.next_attempt(), 60, "retried")
                elif kind == "dead":
                    settlement.dead(entry, {"reason": "final: HTTP 410"})
                else:
                    settlement.again(entry)
            return await stream.settle(first), await stream.settle(second)
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == (1, 0)
    copies = {"delay": rclient.zcard(keys.delayed), "dead": rclient.xlen(keys.dead), "again": rclient.xlen(keys.stream)}
    assert copies[kind] == 1
    assert rclient.xpending(keys.stream, GROUP)["pending"] == 0


def test_both_fronts_run_one_claim_fenced_or_not(redis_url, keys, rclient):
    rclient.set(keys.lease, "token")
    rclient.set(keys.epoch, 3)
    rclient.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    rclient.xadd(keys.stream, CallbackEntry("msg_1", "https://example.com/", "{}").fields())
    rclient.xreadgroup(GROUP, "silent", {keys.stream: ">"})
    client = sync_client(redis_url)  # bytes replies, where the leader's client answers str
    operator = SyncCallbackStream(client, keys)

    async def leader() -> tuple[list[str], dict[str, int]]:
        aclient = async_client(redis_url)
        try:
            got = await CallbackStream(aclient, keys).reclaim("leader", 0, fence=("token", 3))
            return [e.callback_id for e in got.entries], got.deliveries
        finally:
            await aclient.aclose()

    try:
        with pytest.raises(LeaseLost):
            operator.reclaim("ops", 0, fence=("token", 2))  # an older epoch
        fenced = operator.reclaim("ops", 0, fence=("token", 3))
        (sid,) = fenced.deliveries
        assert [e.callback_id for e in fenced.entries] == ["msg_1"] and fenced.deliveries == {sid: 2}
        assert asyncio.run(leader()) == (["msg_1"], {sid: 3})
        plain = operator.reclaim("ops", 0)  # operators hold no lease
        assert [e.stream_id for e in plain.entries] == [sid] and plain.deliveries == {sid: 4}
    finally:
        client.close()
