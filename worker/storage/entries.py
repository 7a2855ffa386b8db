"""Status stream entries as the writer holds them: decoded on arrival, written, bad updates set aside.

Decoding is per update, not all-or-nothing: one malformed update in an entry carrying a hundred must not cost the other
ninety-nine. What cannot be used is kept (as received, with the reason) and
copied to the ``status:bad`` stream when the entry is acked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from ..streams.client import text
from ..streams.status import StatusUpdate, expand_queued
from .apply import StatusStore
from .merge import check, merge

log = logging.getLogger(__name__)

REFUSED = (DataError, IntegrityError)  # the rows, not the database, are at fault

MAX_ERROR_CHARS = 1000


@dataclass
class Entry:
    """One status stream entry: its id, the updates to apply and the ones set aside (item, reason)."""

    stream_id: str
    updates: list[StatusUpdate] = field(default_factory=list)
    rejected: list[tuple[Any, str]] = field(default_factory=list)
    raw: str | None = None  # the ``u`` field, kept only when the entry as a whole is unusable

    @property
    def order(self) -> tuple[int, int]:
        """Sort key: stream order."""
        ms, _, seq = self.stream_id.partition("-")
        return int(ms), int(seq or 0)

    def reject(self, update: StatusUpdate, why: str) -> None:
        """Set ``update`` aside (the database refused it)."""
        self.updates.remove(update)
        self.rejected.append((update.as_json(), why))

    def bad_record(self) -> dict[str, str]:
        """Fields of this entry's record in the ``status:bad`` stream."""
        if self.raw is not None:
            body = self.raw
        else:
            body = json.dumps([item for item, _ in self.rejected], separators=(",", ":"), default=repr)
        reasons = "; ".join(dict.fromkeys(why for _, why in self.rejected))
        return {"id": self.stream_id, "error": reasons[:MAX_ERROR_CHARS], "u": body}


def decode_entry(stream_id: str, fields: Mapping[Any, Any]) -> Entry:
    """Decode one entry's ``u`` field (bytes or str keys); never raises."""
    entry = Entry(stream_id)
    raw = fields.get(b"u", fields.get("u"))
    if raw is None:
        entry.raw = json.dumps({text(k): text(v) for k, v in fields.items()})
        entry.rejected.append((None, "entry has no 'u' field"))
        return entry
    try:
        items = json.loads(raw)
    except ValueError as e:
        items = e
    if not isinstance(items, list):
        entry.raw = text(raw)
        entry.rejected.append((None, "not a JSON array of updates"))
        return entry
    for item in items:
        try:
            updates = expand_queued(item) if isinstance(item, dict) and "queued" in item else [_update(item)]
            for update in updates:
                check(update)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            entry.rejected.append((item, f"{type(e).__name__}: {e}"))
            continue
        entry.updates.extend(updates)
    return entry


def _update(item: Any) -> StatusUpdate:
    if not isinstance(item, dict):
        raise ValueError("an update is a JSON object")
    fields = item.get("fields") or {}
    if not isinstance(fields, dict):
        raise ValueError("'fields' must be an object")
    at = item["at"]
    if isinstance(at, bool) or not isinstance(at, int):
        raise ValueError(f"'at' must be integer epoch milliseconds, got {at!r}")
    return StatusUpdate(str(item["table"]), str(item["key"]), at, dict(fields))


def write(store: StatusStore, entries: list[Entry]) -> int:
    """Apply the entries' updates (in stream order) in one transaction; returns the rows changed.

    If the database refuses the batch for its data (not for being unavailable:
    those errors propagate and the caller retries), each entry is applied on
    its own, and a refused entry's updates one by one, setting aside the ones
    refused. Applying a prefix of a batch again later is harmless, so a
    connection lost in the middle of this is too.
    """
    changes = merge(update for entry in entries for update in entry.updates)
    try:
        store.apply(changes)
        return len(changes)
    except REFUSED as e:
        log.warning("status flush refused by the database (%s); writing entry by entry", reason(e))
    return sum(_write_alone(store, entry) for entry in entries)


def _write_alone(store: StatusStore, entry: Entry) -> int:
    if not entry.updates:
        return 0
    try:
        store.apply(merge(entry.updates))
        return len(entry.updates)
    except REFUSED as e:
        if len(entry.updates) == 1:
            entry.reject(entry.updates[0], f"database refused it: {reason(e)}")
            return 0
    written = 0
    for update in list(entry.updates):
        try:
            store.apply(merge([update]))
            written += 1
        except REFUSED as e:
            entry.reject(update, f"database refused it: {reason(e)}")
    return written


def reason(error: BaseException) -> str:
    """The first line of what went wrong (the driver's message for database errors)."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        return str(error.orig).strip().splitlines()[0]
    return str(error).splitlines()[0] if str(error) else type(error).__name__
