"""The callbacks every benchmark sends: the same small JSON body, so every contender sends the same bytes."""

from __future__ import annotations

from typing import Any

from worker.producer import CallbackRequest, encode_payload, new_callback_id

MAX_BODY = 1024 * 1024


def payload(n: int) -> dict[str, Any]:
    """The JSON payload of callback ``n``: what a finished image-edit task reports."""
    return {"task_id": f"task-{n}", "status": "success", "image_path": f"media/out/{n}.png", "n": n}


def requests(url: str, count: int, start: int = 0) -> list[CallbackRequest]:
    """``count`` producer requests to ``url``."""
    return [CallbackRequest(url, payload(n), f"task-{n}") for n in range(start, start + count)]


def bodies(count: int) -> list[tuple[str, str]]:
    """``count`` (callback id, JSON body) pairs for the baselines, encoded as the producer encodes them."""
    return [(new_callback_id(), encode_payload(payload(n), MAX_BODY)) for n in range(count)]
