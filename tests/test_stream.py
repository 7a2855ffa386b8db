"""The stream primitives against real Redis: settling is exactly-once per entry."""

from __future__ import annotations

import asyncio

import pytest

from worker.streams.client import async_client
from worker.streams.entry import CallbackEntry
from worker.streams.keys import GROUP
from worker.streams.settlement import Settlement
from worker.streams.stream import CallbackStream


@pytest.mark.parametrize("kind", ["delay", "dead", "again"])
def test_an_entry_settled_by_someone_else_first_gets_no_second_copy(redis_url, keys, rclient, kind):
    async def scenario() -> tuple[int, int]:
        client = async_client(redis_url)
        try:
            stream = CallbackStream(client, keys)
            await stream.ensure_group()
            await client.xadd(keys.stream, CallbackEntry("msg_1", "https://example.com/", "{}").fields())
            (entry,) = await stream.read("old-leader", 10, 0.1)
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


def test_a_sending_update_is_dropped_when_its_attempt_ends_in_the_same_settlement():
    from worker.storage.entries import decode_entry
    from worker.streams import status

    settlement = Settlement()
    settlement.record_sending(status.callback_sending("msg_done", 1, 1000))
    settlement.record_sending(status.callback_sending("msg_flying", 1, 1000))
    outcome = status.callback_attempted(
        "msg_done",
        attempt=1,
        state="delivered",
        status_code=204,
        error=None,
        started_at=1000,
        duration_ms=2.0,
        outcome="delivered",
        next_attempt_at=None,
        at=1002,
    )
    settlement.record(outcome)

    written = decode_entry("1-0", {"u": settlement.script_args()[-1]}).updates
    sending = [u.key for u in written if u.fields.get("status") == "sending"]
    assert sending == ["msg_flying"]  # still in flight: its "sending" is written
    assert [u.key for u in written if u.fields.get("status") == "delivered"] == ["msg_done"]

    retry = Settlement()
    retry.absorb(settlement)  # a failed settle hands everything over, the pending "sending" included
    assert {u.key for u in decode_entry("1-0", {"u": retry.script_args()[-1]}).updates} == {
        "msg_done",
        "msg_done:1",
        "msg_flying",
    }
