"""The callback worker: image-edit tasks and paced, signed, at-least-once webhook delivery.

Producer API::

    from worker import enqueue_callback, enqueue_callbacks
    callback_id = enqueue_callback("https://customer.example/hook", {"task_id": "t1", "status": "success"})
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from .config.settings import Settings
from .errors import (
    EnqueueFailed,
    InvalidCallback,
    InvalidCallbackURL,
    InvalidPayload,
    PayloadTooLarge,
    SettingsError,
    WorkerError,
)
from .producer import CallbackProducer, CallbackRequest

__all__ = [
    "CallbackProducer",
    "CallbackRequest",
    "EnqueueFailed",
    "InvalidCallback",
    "InvalidCallbackURL",
    "InvalidPayload",
    "PayloadTooLarge",
    "Settings",
    "SettingsError",
    "WorkerError",
    "enqueue_callback",
    "enqueue_callbacks",
]

_producer: CallbackProducer | None = None
_lock = threading.Lock()


def default_producer() -> CallbackProducer:
    """The process-wide producer, configured from the environment on first use."""
    global _producer
    with _lock:
        if _producer is None:
            _producer = CallbackProducer(Settings.from_env(signs=False))
        return _producer


def enqueue_callback(callback_url: str, payload: Any, *, task_id: str | None = None) -> str:
    """Enqueue one callback and return its id (the ``webhook-id`` sent on every attempt).

    Raises an :class:`InvalidCallback` (a ``ValueError``) for a bad URL or
    payload, and :class:`EnqueueFailed` when Redis does not answer; in both
    cases nothing is enqueued.
    """
    return default_producer().enqueue(callback_url, payload, task_id=task_id)


def enqueue_callbacks(requests: Iterable[CallbackRequest | tuple[Any, ...] | Mapping[str, Any]]) -> list[str]:
    """Enqueue many callbacks in one round trip (all or none); returns their ids in order."""
    return default_producer().enqueue_many(requests)
