"""The leader's settle buffer against real Redis: what one write carries, and what a failed write keeps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from conftest import free_port, recorded_updates

from worker.delivery.sender import AttemptResult
from worker.engine import attempt
from worker.engine.settler import Settler
from worker.streams.client import async_client
from worker.streams.entry import CallbackEntry
from worker.streams.keys import Keys
from worker.streams.stream import CallbackStream

DELIVERED = AttemptResult(204, None, "", None, started_at=1.0, duration=0.002)
BUSY = AttemptResult(503, None, "busy", None, started_at=1.0, duration=0.002)

Scenario = Callable[[Settler, CallbackStream, list[CallbackEntry]], Awaitable[None]]


def run(redis_url: str, keys: Keys, batch_size: int, callback_ids: list[str], scenario: Scenario) -> None:
    """Read ``callback_ids`` from the stream, then run ``scenario`` with a settler whose Redis is down."""

    async def main() -> None:
        client, down = async_client(redis_url), async_client(f"redis://127.0.0.1:{free_port()}/0")
        try:
            stream = CallbackStream(client, keys)
            await stream.ensure_group()
            for callback_id in callback_ids:
                await client.xadd(keys.stream, CallbackEntry(callback_id, "https://example.com/", "{}").fields())
            entries = (await stream.read("leader", 10, 0.1)).entries
            await scenario(Settler(CallbackStream(down, keys), batch_size), stream, entries)
        finally:
            await client.aclose()
            await down.aclose()

    asyncio.run(main())


def test_a_sending_update_is_dropped_when_its_attempt_ends_before_the_write(make_settings, redis_url, keys, rclient):
    settings = make_settings()

    async def scenario(settler: Settler, stream: CallbackStream, entries: list[CallbackEntry]) -> None:
        done, flying = entries
        settler.sending(attempt.sending(done, 1000))
        settler.sending(attempt.sending(flying, 1000))
        settler.attempted(attempt.judge(settings, done, DELIVERED))
        await settler.flush(retries=0)  # a failed write keeps everything, the pending "sending" included
        assert not settler.empty and rclient.xlen(keys.status_updates) == 0
        settler.stream = stream
        await settler.flush(retries=0)
        assert settler.empty

    run(redis_url, keys, settings.batch_size, ["msg_done", "msg_flying"], scenario)
    written = recorded_updates(rclient, keys)
    sending = [u.key for u in written if u.fields.get("status") == "sending"]
    assert sending == ["msg_flying"]  # still in flight: its "sending" is written
    assert [u.key for u in written if u.fields.get("status") == "delivered"] == ["msg_done"]
    assert {u.key for u in written} == {"msg_done", "msg_done:1", "msg_flying"}


def test_a_sending_update_kept_by_a_failed_write_is_still_dropped_when_its_attempt_ends(
    make_settings, redis_url, keys, rclient
):
    settings = make_settings()

    async def scenario(settler: Settler, stream: CallbackStream, entries: list[CallbackEntry]) -> None:
        (entry,) = entries
        settler.sending(attempt.sending(entry, 1000))
        await settler.flush(retries=0)
        settler.attempted(attempt.judge(settings, entry, BUSY))
        settler.stream = stream
        await settler.flush(retries=0)

    run(redis_url, keys, settings.batch_size, ["msg_late"], scenario)
    assert [u.fields.get("status") for u in recorded_updates(rclient, keys) if u.table == "callbacks"] == ["retrying"]
    assert rclient.zcard(keys.delayed) == 1


def test_the_settle_loop_ends_when_cancelled_just_as_a_full_batch_wakes_it(make_settings, redis_url, keys, rclient):
    # Python 3.11's asyncio.wait_for swallows a cancellation that arrives as its awaitable completes: the
    # settle loop then ran on, and a leader stepping down (which cancels it) waited forever.
    settings = make_settings()
    ended: list[bool] = []

    async def scenario(settler: Settler, stream: CallbackStream, entries: list[CallbackEntry]) -> None:
        settler.stream = stream
        for ticks in range(4):  # the batch fills 0-3 event-loop ticks before the cancellation
            loop = asyncio.create_task(settler.run())
            await asyncio.sleep(0.02)  # the loop gathers, waiting for the batch to fill
            settler.batch_size = 1
            settler.attempted(attempt.judge(settings, entries[ticks], DELIVERED))
            for _ in range(ticks):
                await asyncio.sleep(0)
            loop.cancel()
            finished, _ = await asyncio.wait({loop}, timeout=2)
            ended.append(bool(finished))

    run(redis_url, keys, settings.batch_size, [f"msg_{n}" for n in range(4)], scenario)
    assert ended == [True, True, True, True]
