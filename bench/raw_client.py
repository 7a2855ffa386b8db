"""Baseline: a bare aiohttp client posting signed callbacks at fixed concurrency, the loopback limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence

import aiohttp
import uvloop

from worker.config.parsers import signing_key
from worker.delivery import signing

from .harness import SECRET

CONCURRENCY = 64


async def _post_lanes(session: aiohttp.ClientSession, url: str, items: Sequence[tuple[str, str]], lanes: int) -> None:
    key = signing_key(SECRET)
    work: Iterator[tuple[str, str]] = iter(items)

    async def lane() -> None:
        for callback_id, body in work:  # the lanes share one iterator: each takes the next item
            data = body.encode()
            headers = signing.headers(key, callback_id, int(time.time()), data)
            async with session.post(url, data=data, headers=headers) as response:
                await response.read()

    await asyncio.gather(*(lane() for _ in range(lanes)))


async def _run(url: str, warm_url: str, items: Sequence[tuple[str, str]], concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await _post_lanes(session, warm_url, items[:concurrency], concurrency)  # open the connections first
        started = time.time()
        await _post_lanes(session, url, items, concurrency)
        return started


def post_all(
    url: str,
    warm_url: str,
    items: Sequence[tuple[str, str]],
    concurrency: int = CONCURRENCY,
    *,
    use_uvloop: bool = True,
) -> float:
    """POST every (callback id, body) to ``url`` after warming up on ``warm_url``; returns the start time.

    On uvloop by default: the baseline is the fastest plain client (the worker stays on asyncio for now).
    """
    run = uvloop.run if use_uvloop else asyncio.run
    return run(_run(url, warm_url, items, concurrency))
