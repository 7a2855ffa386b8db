"""The arguments of one ``settle.lua`` call: many callbacks' outcomes and their status updates, one round trip."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import status
from .entry import CallbackEntry, Malformed
from .status import StatusUpdate


@dataclass
class Settlement:
    """Outcomes collected for one call of ``settle.lua`` (one round trip for many callbacks).

    Status updates for the database ride along as one status stream entry, so
    a callback's final state is recorded atomically with its ack.
    """

    args: list[str] = field(default_factory=list)
    count: int = 0
    updates: list[StatusUpdate] = field(default_factory=list)

    def record(self, updates: list[StatusUpdate]) -> None:
        """Add status updates to write with this settlement (after those it holds)."""
        self.updates.extend(updates)

    def absorb(self, other: Settlement) -> None:
        """Take over everything ``other`` holds, ahead of what this one holds (after a failed settle)."""
        self.args[:0] = other.args
        self.count += other.count
        self.updates[:0] = other.updates

    def script_args(self) -> list[str]:
        """ARGV records for ``settle.lua``."""
        if not self.updates:
            return self.args
        return [*self.args, "status", status.encode(self.updates)]

    @property
    def empty(self) -> bool:
        """Whether there is nothing to write."""
        return not self.count and not self.updates

    def ack(self, entry: CallbackEntry) -> None:
        """Delivered: remove it."""
        self._add("ack", _sid(entry))

    def delay(self, entry: CallbackEntry, seconds: float, counter: str) -> None:
        """Wait in the delayed set (a retry, or a deferral that is not an attempt)."""
        self._add("delay", _sid(entry), str(int(seconds * 1000)), entry.member(), counter)

    def dead(self, entry: CallbackEntry, extra: dict[str, str]) -> None:
        """Append to the dead-letter stream with the reason and last outcome in ``extra``."""
        self._with_fields("dead", entry, {**entry.fields(), **extra})

    def again(self, entry: CallbackEntry) -> None:
        """Hand back at the stream's tail (unstarted work of a leader that is stepping down)."""
        self._with_fields("again", entry, entry.fields())

    def aside(self, record: Malformed, now_ms: int) -> None:
        """Set a malformed entry aside in the dead-letter stream, with its reason and raw fields (capped)."""
        if record.stream_id is None:
            raise ValueError("a malformed record that was not read from the stream cannot be settled")
        self._flat("aside", record.stream_id, record.dead_fields(now_ms))

    def _with_fields(self, kind: str, entry: CallbackEntry, fields: dict[str, str]) -> None:
        self._flat(kind, _sid(entry), fields)

    def _flat(self, kind: str, stream_id: str, fields: dict[str, str]) -> None:
        flat = [str(len(fields))]
        for key, value in fields.items():
            flat += [key, value]
        self._add(kind, stream_id, *flat)

    def _add(self, *args: str) -> None:
        self.args.extend(args)
        self.count += 1


def _sid(entry: CallbackEntry) -> str:
    if entry.stream_id is None:
        raise ValueError(f"callback {entry.callback_id} was not read from the stream; it cannot be settled")
    return entry.stream_id
