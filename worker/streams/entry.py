"""A callback as it travels through the stream, the delayed set and the dead-letter stream."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .client import text


@dataclass(frozen=True)
class CallbackEntry:
    """One callback: its id, target, JSON body and delivery history so far.

    ``attempts`` counts the HTTP attempts already made; ``first_enqueued_ms``
    is when the producer accepted it, ``enqueued_ms`` when this copy was
    (re)queued. ``stream_id`` is the id of the stream entry carrying it, when
    it was read from the stream. Field names in Redis are short: every byte
    repeats in every entry.
    """

    callback_id: str
    url: str
    body: str
    task_id: str | None = None
    attempts: int = 0
    first_enqueued_ms: int = 0
    enqueued_ms: int = 0
    stream_id: str | None = None

    def fields(self) -> dict[str, str]:
        """Stream entry fields (the stream id is not a field)."""
        out = {
            "cid": self.callback_id,
            "url": self.url,
            "body": self.body,
            "att": str(self.attempts),
            "t0": str(self.first_enqueued_ms),
            "tq": str(self.enqueued_ms),
        }
        if self.task_id is not None:
            out["task"] = self.task_id
        return out

    @classmethod
    def from_fields(cls, stream_id: str | None, raw: Mapping[Any, Any]) -> CallbackEntry:
        """Decode stream fields (bytes or str keys and values)."""
        fields = {text(k): text(v) for k, v in raw.items()}
        return cls(
            callback_id=fields["cid"],
            url=fields["url"],
            body=fields["body"],
            task_id=fields.get("task"),
            attempts=int(fields.get("att", "0")),
            first_enqueued_ms=int(fields.get("t0", "0")),
            enqueued_ms=int(fields.get("tq", "0")),
            stream_id=stream_id,
        )

    def member(self) -> str:
        """The JSON form kept in the delayed set; unique per callback and attempt."""
        return json.dumps(self.fields(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_member(cls, member: str | bytes) -> CallbackEntry:
        """Decode a delayed-set member."""
        return cls.from_fields(None, json.loads(member))

    def next_attempt(self) -> CallbackEntry:
        """The entry after one more failed attempt (still carried by the same stream entry)."""
        return replace(self, attempts=self.attempts + 1)
