"""The status stream as the status writer reads it (blocking): its group, new entries, claims, acks.

The consumer-group operations are :mod:`.groups`' (shared with the callback
stream); what is the writer's own is :meth:`StatusStream.ack`: acking applied
entries, deleting them and setting malformed updates aside in one MULTI.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from . import groups
from .groups import GroupInfo, Message
from .keys import STATUS_GROUP, Keys
from .protocol import Batch, Command, Operation, SyncDriver

BAD_MAXLEN = 10_000  # ``status:bad`` is capped (MAXLEN ~): a flood of bad entries must not fill Redis
CLAIM_COUNT = 500  # entries per XAUTOCLAIM


class StatusStream:
    """One queue's status stream and the writers' consumer group, over a blocking client."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._driver = SyncDriver(client)
        self.keys = keys

    def ensure_group(self) -> None:
        """Create the writers' group from the stream's start, so updates written before it count."""
        self._driver.run(groups.create_group(self.keys.status_updates, STATUS_GROUP))

    def read(self, consumer: str, count: int, block: float) -> list[Message]:
        """New entries for ``consumer``, waiting up to ``block`` s for the first; ``StreamGone`` without group."""
        return self._driver.run(groups.read_group(self.keys.status_updates, STATUS_GROUP, consumer, count, block))

    def claim(self, consumer: str, min_idle: float) -> list[Message]:
        """Claim every entry pending ``min_idle`` s or more (any consumer, ``consumer`` included); not fenced."""
        claimed = groups.claim(self.keys.status_updates, STATUS_GROUP, consumer, min_idle, count=CLAIM_COUNT)
        return self._driver.run(claimed)

    def forget_idle_consumers(self, keep: str, idle: float) -> list[str]:
        """Delete other consumers holding nothing and silent for ``idle`` s or more (tidy XINFO); their names."""
        return self._driver.run(groups.forget_idle_consumers(self.keys.status_updates, STATUS_GROUP, idle, keep=keep))

    def ack(self, ids: Sequence[str], set_aside: Sequence[dict[str, str]]) -> int:
        """XACK and XDEL applied entries, adding ``set_aside`` records to ``status:bad``, in one MULTI.

        Returns how many of ``ids`` were still pending (ours); raises ``StreamGone``
        when the stream or group was deleted meanwhile.
        """
        return self._driver.run(_ack(self.keys, ids, set_aside))

    def group(self) -> GroupInfo | None:
        """The writers' group; ``None`` before a writer ever ran."""
        return self._driver.run(groups.group_info(self.keys.status_updates, STATUS_GROUP))


def _ack(keys: Keys, ids: Sequence[str], set_aside: Sequence[dict[str, str]]) -> Operation[int]:
    bad = [
        Command("xadd", (keys.status_bad, record), {"maxlen": BAD_MAXLEN, "approximate": True}) for record in set_aside
    ]
    replies = yield Batch(
        (
            *bad,
            Command("xack", (keys.status_updates, STATUS_GROUP, *ids)),
            Command("xdel", (keys.status_updates, *ids)),
        ),
        transaction=True,
    )
    return int(replies[-2])
