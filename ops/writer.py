"""The status writer as operators see it: its lease, its backlog and what it set aside."""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import ResponseError

from worker.streams.client import text
from worker.streams.keys import STATUS_GROUP, Keys


def writer_status(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """``{held, holder, backlog, pending, lag, bad}``: zeros and ``None`` before a writer ever ran."""
    pipe: Any = client.pipeline(transaction=False)
    pipe.get(keys.status_lease).xlen(keys.status_updates).xlen(keys.status_bad)
    holder, backlog, bad = pipe.execute()
    try:
        groups = client.xinfo_groups(keys.status_updates)
    except ResponseError:  # no status stream yet
        groups = []
    group = next((g for g in groups if text(g["name"]) == STATUS_GROUP), None)
    return {
        "held": holder is not None,
        "holder": text(holder) if holder is not None else None,
        "backlog": int(backlog),
        "pending": int(group["pending"]) if group else 0,
        "lag": None if group is None or group.get("lag") is None else int(group["lag"]),
        "bad": int(bad),
    }
