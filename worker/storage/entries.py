"""Status stream entries as the writer holds them: decoded on arrival, written, bad updates set aside.

Decoding is the status codec's (:func:`worker.streams.status.decode`, per item,
never all-or-nothing), with the field-level validation of :mod:`.merge` on top.
What cannot be used is kept (as received, with the reason) and copied to the
``status:bad`` stream when the entry is acked; so is what the database refuses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from ..streams import status
from ..streams.groups import id_order
from ..streams.status import StatusUpdate
from .apply import StatusStore
from .batch_check import all_storable
from .merge import check, merge

log = logging.getLogger(__name__)

REFUSED = (DataError, IntegrityError)  # the rows, not the database, are at fault


@dataclass
class StatusEntry:
    """One status stream entry: its id, the updates to apply and the ones set aside (item, reason)."""

    stream_id: str
    updates: list[StatusUpdate] = field(default_factory=list)
    rejected: list[tuple[Any, str]] = field(default_factory=list)
    raw: str | None = None  # the ``u`` field, kept only when the entry as a whole is unusable

    @property
    def order(self) -> tuple[int, int]:
        """Sort key: stream order."""
        return id_order(self.stream_id)

    def reject(self, update: StatusUpdate, why: str) -> None:
        """Set ``update`` aside (the database refused it)."""
        self.updates.remove(update)
        self.rejected.append((update.as_json(), why))

    def bad_record(self) -> dict[str, str]:
        """Fields of this entry's record in the ``status:bad`` stream."""
        return status.bad_record(self.stream_id, self.rejected, self.raw)


def decode_entry(stream_id: str, fields: Mapping[Any, Any]) -> StatusEntry:
    """Decode one entry (bytes or str keys), its updates checked as :func:`.merge.check` does; never raises.

    The whole entry is checked column by column first (:func:`.batch_check.all_storable`,
    a fraction of the cost); only an entry that does not pass is decoded again
    with every update checked on its own, to set aside exactly the items ``check`` refuses.
    """
    decoded = status.decode(fields)
    if not all_storable(decoded.updates):
        decoded = status.decode(fields, check)
    return StatusEntry(stream_id, decoded.updates, decoded.rejected, decoded.raw)


def write(store: StatusStore, entries: list[StatusEntry]) -> int:
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


def _write_alone(store: StatusStore, entry: StatusEntry) -> int:
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
