"""A cancelled leader loop ends, whatever it was doing: Redis calls re-raise a cancellation redis-py dropped."""

from __future__ import annotations

import asyncio

from worker.streams.client import async_client
from worker.streams.keys import Keys
from worker.streams.pace import Pace
from worker.streams.stream import CallbackStream


def cancel_at_every_tick(loop_body, ticks: int = 8) -> list[bool]:
    """Run ``loop_body`` in a task, cancel it 0..ticks-1 event-loop ticks into a call; whether each ended."""

    async def main() -> list[bool]:
        ended = []
        for tick in range(ticks):
            task = asyncio.create_task(loop_body())
            await asyncio.sleep(0.01)
            for _ in range(tick):
                await asyncio.sleep(0)
            task.cancel()
            finished, _ = await asyncio.wait({task}, timeout=2)
            ended.append(bool(finished) and task.cancelled())
            task.cancel()
        return ended

    return asyncio.run(main())


def test_a_loop_of_stream_calls_ends_when_cancelled_at_any_moment(redis_url, keys: Keys):
    async def body() -> None:
        client = async_client(redis_url)
        stream = CallbackStream(client, keys)
        try:
            while True:
                await stream.snapshot()
        finally:
            await client.aclose()

    assert cancel_at_every_tick(body) == [True] * 8


def test_a_loop_of_pace_reservations_ends_when_cancelled_at_any_moment(redis_url, keys: Keys):
    async def body() -> None:
        client = async_client(redis_url)
        pace = Pace(client, keys.pace, 1_000_000)
        try:
            while True:
                await pace.reserve(1, 1.0)
        finally:
            await client.aclose()

    assert cancel_at_every_tick(body) == [True] * 8


def test_cleanup_after_a_cancellation_can_still_call_redis(redis_url, keys: Keys):
    # A leader that is cancelled steps down in a ``finally``: hands back, settles, releases the lease.
    async def body() -> str:
        client = async_client(redis_url)
        stream = CallbackStream(client, keys)
        try:
            while True:
                await stream.snapshot()
        except asyncio.CancelledError:
            await stream.snapshot()  # the cancellation surfaced once; cleanup is not cancelled again
            return "cleaned up"
        finally:
            await client.aclose()

    async def main() -> list[str]:
        results = []
        for tick in range(6):
            task = asyncio.create_task(body())
            await asyncio.sleep(0.01)
            for _ in range(tick):
                await asyncio.sleep(0)
            task.cancel()
            results.append(await asyncio.wait_for(task, timeout=2))
        return results

    assert asyncio.run(main()) == ["cleaned up"] * 6
