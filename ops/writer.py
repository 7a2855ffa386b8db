"""The status writer as operators see it: its lease, its backlog and what it set aside."""

from __future__ import annotations

from typing import Any

import redis

from worker.streams.keys import Keys
from worker.streams.lease import holder_of
from worker.streams.status_stream import StatusStream


def writer_status(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """``{held, holder, backlog, pending, lag, bad}``: zeros and ``None`` before a writer ever ran."""
    holder = holder_of(client, keys.writer_lease)
    pipe: Any = client.pipeline(transaction=False)
    backlog, bad = pipe.xlen(keys.status_updates).xlen(keys.status_bad).execute()
    group = StatusStream(client, keys).group()
    return {
        "held": holder is not None,
        "holder": holder,
        "backlog": int(backlog),
        "pending": group.pending if group else 0,
        "lag": group.lag if group else None,
        "bad": int(bad),
    }
