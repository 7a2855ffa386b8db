"""The producer API: validate callbacks and add them to their shard's stream, one round trip per shard."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import redis

from . import redact
from .config.settings import Settings
from .delivery.targets import check_callback_url
from .errors import EnqueueFailed, InvalidCallback, InvalidPayload, PayloadTooLarge
from .streams import status
from .streams.client import sync_client
from .streams.entry import CallbackEntry, id_problem, stream_id_problem
from .streams.keys import Keys
from .streams.protocol import SyncDriver
from .streams.scripts import source
from .streams.shards import record_count, shard_of


@dataclass(frozen=True)
class CallbackRequest:
    """One callback to enqueue: where to POST, what JSON to send, and the task it reports on."""

    url: str
    payload: Any
    task_id: str | None = None


def new_callback_id() -> str:
    """A fresh ``webhook-id`` (``msg_`` + 32 random hex digits, as Standard Webhooks suggests)."""
    return f"msg_{os.urandom(16).hex()}"


# One encoder for every payload: json.dumps with options builds a new one per call.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_payload(payload: Any, limit: int) -> str:
    """The compact JSON body for ``payload``; raises a clear error when it cannot be sent."""
    try:
        body = _JSON.encode(payload)
    except RecursionError:
        raise InvalidPayload("payload nests too deeply to serialise; flatten it (or send a reference)") from None
    except (TypeError, ValueError) as e:
        raise InvalidPayload(
            f"payload is not JSON-serialisable ({e}); send dicts, lists, strings, finite numbers, booleans or None"
        ) from e
    try:
        size = len(body.encode())
    except UnicodeEncodeError as e:  # a lone surrogate, e.g. a file name decoded with surrogateescape
        raise InvalidPayload(
            f"payload contains a lone surrogate {e.object[e.start : e.end]!r}, which is not valid Unicode text; "
            "decode bytes and file names strictly before sending"
        ) from e
    if size > limit:
        raise PayloadTooLarge(
            f"payload is {size} bytes as JSON; the limit is {limit} (CALLBACK_MAX_PAYLOAD_BYTES). "
            "Send a reference (a URL or id) instead of the data"
        )
    return body


class CallbackProducer:
    """Adds callbacks to one queue's stream.

    Every callback is validated before anything is sent; a batch goes in one
    script call (``enqueue.lua``) per shard it touches, each all or none (with
    one shard, the default, the whole batch is enqueued or none of it).
    """

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self._settings = settings
        self._keys = Keys(settings.namespace, settings.queue)
        self._client = client or sync_client(settings.redis_url)
        self._enqueue = self._client.register_script(source("enqueue"))
        self._driver = SyncDriver(self._client)
        self._recorded = False  # the shard count in use is noted in Redis with the first write

    def entry(self, request: CallbackRequest, now_ms: int) -> CallbackEntry:
        """Validate one request and build its stream entry (no I/O)."""
        url = check_callback_url(request.url, allow_private=self._settings.allow_private)
        if request.task_id is not None:
            if not isinstance(request.task_id, str):
                raise InvalidCallback(f"task_id must be a string or None, got {type(request.task_id).__name__}")
            if problem := id_problem(request.task_id):
                raise InvalidCallback(f"task_id {problem}")
        body = encode_payload(request.payload, self._settings.max_payload_bytes)
        return CallbackEntry(new_callback_id(), url, body, request.task_id, 0, now_ms, now_ms)

    def enqueue(self, url: str, payload: Any, *, task_id: str | None = None, after: str | None = None) -> str:
        """Enqueue one callback; returns its id (the ``webhook-id`` of every attempt).

        ``after``: the id of a status entry of shard 0 (:func:`~worker.streams.status.record_status`'s answer)
        that the status writer must have committed before the first attempt starts (``CALLBACK_AFTER_COMMIT``).
        """
        if after is None:
            return self.enqueue_many([CallbackRequest(url, payload, task_id)])[0]
        if problem := stream_id_problem(after):
            raise InvalidCallback(f"after {after[:40]!r} {problem}")
        now = status.now_ms()
        entry = replace(self.entry(CallbackRequest(url, payload, task_id), now), after=after)
        self._send([entry], now)
        return entry.callback_id

    def enqueue_many(self, requests: Iterable[CallbackRequest | tuple[Any, ...] | Mapping[str, Any]]) -> list[str]:
        """Enqueue many callbacks, one round trip per shard; returns their ids in order.

        Invalid input raises before anything is sent. A Redis failure raises
        :class:`EnqueueFailed`, whose ``enqueued`` names what earlier shards took.
        """
        now = status.now_ms()
        entries = []
        for index, raw in enumerate(requests):
            try:
                entries.append(self.entry(_request(raw), now))
            except InvalidCallback as e:
                raise type(e)(f"callback #{index}: {e}") from e
        if not entries:
            return []
        self._send(entries, now)
        return [entry.callback_id for entry in entries]

    def _send(self, entries: list[CallbackEntry], now: int) -> None:
        """Write validated ``entries``, one script call per shard; :class:`EnqueueFailed` names what was taken."""
        enqueued: list[str] = []
        for shard, group in self._by_shard(entries).items():
            try:
                self._write(self._keys.of_shard(shard), group, now)
            except redis.RedisError as e:
                where = f" (shard {shard}; {len(enqueued)} callbacks of other shards were enqueued)" if enqueued else ""
                raise EnqueueFailed(
                    f"Redis at {redact.url(self._settings.redis_url)} did not take the callbacks{where}: {e}",
                    tuple(enqueued),
                ) from e
            enqueued += (entry.callback_id for entry in group)
        # Imported here, not at the top: a Dramatiq worker must point prometheus_client at its
        # multi-process directory before the first import, and importing `worker` imports this module.
        from .metrics import ENQUEUED

        ENQUEUED.labels(self._settings.namespace).inc(len(entries))

    def _by_shard(self, entries: list[CallbackEntry]) -> dict[int, list[CallbackEntry]]:
        shards = self._settings.shards
        if shards == 1:
            return {0: entries}
        groups: dict[int, list[CallbackEntry]] = {}
        for entry in entries:
            groups.setdefault(shard_of(entry.url, shards), []).append(entry)
        return groups

    def _write(self, keys: Keys, entries: list[CallbackEntry], now: int) -> None:
        # One shard's entries and their "queued" status item, in one script call: all or none.
        if not self._recorded and self._settings.shards > 1:  # one shard is the implicit least: nothing to note
            self._driver.run(record_count(keys, self._settings.shards))
            self._recorded = True
        args: list[str | int] = [status.encode_queued(((e.callback_id, e.url, e.task_id) for e in entries), now)]
        for entry in entries:
            fields = entry.fields()
            args.append(len(fields))
            for key, value in fields.items():
                args += (key, value)
        self._enqueue(keys=[keys.stream, keys.status_updates], args=args)

    def schedule(self, entry: CallbackEntry, delay: float) -> None:
        """Put a callback that was already attempted elsewhere into the delayed set, due in ``delay`` seconds.

        The leader picks it up when due and goes on with its attempt count and
        ``webhook-id`` (immediate delivery hands over its retries this way).
        """
        due_ms = int((time.time() + delay) * 1000)
        try:
            keys = self._keys.of_shard(shard_of(entry.url, self._settings.shards))
            self._client.zadd(keys.delayed, {entry.member(): due_ms})
        except redis.RedisError as e:
            raise EnqueueFailed(f"Redis at {redact.url(self._settings.redis_url)} did not take the retry: {e}") from e

    def close(self) -> None:
        """Close the Redis connections."""
        self._client.close()


def _request(raw: CallbackRequest | tuple[Any, ...] | Mapping[str, Any]) -> CallbackRequest:
    if isinstance(raw, CallbackRequest):
        return raw
    if isinstance(raw, Mapping):
        unknown = set(raw) - {"url", "payload", "task_id"}
        if unknown or "url" not in raw or "payload" not in raw:
            raise InvalidCallback(f"expected keys url, payload[, task_id]; got {sorted(map(repr, raw))}")
        return CallbackRequest(raw["url"], raw["payload"], raw.get("task_id"))
    if isinstance(raw, tuple) and len(raw) in (2, 3):
        return CallbackRequest(*raw)
    raise InvalidCallback("each callback is a CallbackRequest, a (url, payload[, task_id]) tuple or a mapping")
