"""The status writer as operators see it: its lease, and every shard's backlog and what it set aside."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from worker.streams.keys import Keys
from worker.streams.lease import holder_of
from worker.streams.status_stream import StatusStream

from .shards import unread


def writer_status(client: redis.Redis, shards: Sequence[Keys]) -> dict[str, Any]:
    """``{held, holder, backlog, pending, lag, bad}`` summed over ``shards``' status streams (one lease for all).

    Zeros and ``None`` before a writer ever ran. Each shard is read on its own (one hash tag per shard).
    """
    holder = holder_of(client, shards[0].writer_lease)
    backlog = pending = bad = 0
    streams = []
    for keys in shards:
        pipe: Any = client.pipeline(transaction=False)
        length, set_aside = pipe.xlen(keys.status_updates).xlen(keys.status_bad).execute()
        group = StatusStream(client, keys).group()
        backlog, bad = backlog + int(length), bad + int(set_aside)
        pending += group.pending if group else 0
        streams.append((group is not None, group.lag if group else None, int(length)))
    return {
        "held": holder is not None,
        "holder": holder,
        "backlog": backlog,
        "pending": pending,
        "lag": unread(streams),
        "bad": bad,
    }
