"""Immediate delivery: POST one callback now, without the stream (the old system's non-batched path).

For a deployment that delivers directly, and as the fallback when enqueueing
fails. It is the leader's delivery without the queue: the same
:class:`~worker.delivery.sender.Sender` (Standard Webhooks signature, SSRF
guard, no redirects, bounded time and response size), the same URL and
payload checks as the producer, and the same judgement of each attempt and
status updates (:mod:`worker.engine.attempt`). Those go to the status stream; if Redis is down
too (the usual reason enqueueing failed) and a :class:`StatusStore` is given,
straight into the database. Deliveries here are not paced: a burst belongs in
the queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy.exc import SQLAlchemyError

from ..config.settings import Settings
from ..delivery.sender import Sender
from ..delivery.signing import SigningKeys
from ..delivery.targets import check_callback_url
from ..producer import encode_payload, new_callback_id
from ..storage.apply import StatusStore
from ..storage.merge import merge
from ..streams import status
from ..streams.entry import CallbackEntry
from ..streams.keys import Keys
from ..streams.shards import shard_of
from ..streams.status import StatusUpdate, now_ms
from .attempt import judge, sending

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImmediateResult:
    """How an immediate delivery ended.

    ``state`` is ``delivered``, ``dead`` or ``retrying`` (the policy wants
    another attempt after ``retry_in`` seconds, later than this call waits).
    ``recorded`` says where its status updates went: ``stream``, ``database``
    or ``nowhere`` (both were unavailable; the delivery itself still happened).
    """

    callback_id: str
    state: str
    attempts: int
    status_code: int | None
    error: str | None
    retry_in: float | None
    recorded: str


class StatusRecorder:
    """Records status updates: to the status stream, else (if it has one) through a store into the database."""

    def __init__(self, client: redis.Redis, keys: Keys, store: StatusStore | None = None) -> None:
        self.client = client
        self.keys = keys
        self.store = store
        self.outcome = "stream"

    def record(self, updates: list[StatusUpdate]) -> None:
        """Record ``updates``; remembers the worst place they ended up in :attr:`outcome`."""
        try:
            status.record_status(updates, self.client, self.keys)
            return
        except (redis.RedisError, OSError) as e:
            log.warning("status stream unavailable (%s); %d updates go to the database", e, len(updates))
        try:
            if self.store is None:
                raise RuntimeError("no database store given")
            self.store.apply(merge(updates))
            self.outcome = "database" if self.outcome == "stream" else self.outcome
        except (SQLAlchemyError, RuntimeError) as e:
            log.error("status updates of an immediate delivery lost (%s): %s", e, [u.as_json() for u in updates])
            self.outcome = "nowhere"


async def deliver(
    settings: Settings,
    url: str,
    payload: Any,
    recorder: StatusRecorder,
    *,
    task_id: str | None = None,
    callback_id: str | None = None,
    attempts: int = 1,
    max_wait: float = 10.0,
) -> ImmediateResult:
    """Deliver one callback now, making up to ``attempts`` attempts while each retry is due within ``max_wait`` s.

    Raises :class:`~worker.errors.InvalidCallback` (a ``ValueError``) for a bad
    URL or payload before anything is sent or recorded.
    """
    checked_url = check_callback_url(url, allow_private=settings.allow_private)
    body = encode_payload(payload, settings.max_payload_bytes)
    now = now_ms()
    entry = CallbackEntry(callback_id or new_callback_id(), checked_url, body, task_id, 0, now, now)
    pending = [status.callback_queued(entry.callback_id, entry.url, task_id, now)]
    sender = Sender(settings, SigningKeys.from_settings(settings))
    try:
        while True:
            recorder.record([*pending, sending(entry, now_ms())])
            result = await sender.send(entry)
            outcome = judge(settings, entry, result)
            pending = outcome.updates()
            retry_in = outcome.retry_in
            if retry_in is None or outcome.attempt >= attempts or retry_in > max_wait:
                recorder.record(pending)
                return ImmediateResult(
                    entry.callback_id,
                    outcome.state,
                    outcome.attempt,
                    result.status,
                    outcome.error,
                    retry_in,
                    recorder.outcome,
                )
            await asyncio.sleep(retry_in)
            entry = entry.next_attempt()
    finally:
        await sender.close()


def deliver_now(
    settings: Settings,
    url: str,
    payload: Any,
    *,
    client: redis.Redis,
    store: StatusStore | None = None,
    task_id: str | None = None,
    attempts: int = 1,
    max_wait: float = 10.0,
) -> ImmediateResult:
    """Blocking form of :func:`deliver`: runs on its own event loop (in a helper thread if this thread has one)."""
    shard = shard_of(url, settings.shards) if isinstance(url, str) else 0  # where the callback's row is written
    recorder = StatusRecorder(client, Keys(settings.namespace, settings.queue, shard), store)
    run = deliver(settings, url, payload, recorder, task_id=task_id, attempts=attempts, max_wait=max_wait)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="immediate-delivery") as pool:
        return pool.submit(asyncio.run, run).result()
