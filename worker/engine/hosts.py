"""Per-host fairness: callbacks wait per host, and a host with no free slot never blocks another.

Pure bookkeeping, no I/O: the leader offers entries, takes the next startable
one (round-robin over hosts with a free slot), reports when one finishes, and
sheds what should not wait in memory any longer:

- a *saturated* host (every slot in flight) keeps at most its fair share of
  the buffer waiting: ``buffer / hosts with waiting work``, and never less than
  ``min_share``. The rest is handed back for deferral, so a slow or dead
  receiver cannot fill the leader's memory and stall the other hosts, while a
  lone busy host (the common burst to one customer) may use the whole buffer;
- an entry that has waited ``max_wait`` seconds is handed back too, so it is
  never mistaken for the pending entry of a silent consumer and reclaimed.

A host that merely waits for the global pace is not saturated: it is never
refused or shed for its size.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING

from ..streams.entry import CallbackEntry
from ..streams.shards import host_port

if TYPE_CHECKING:
    from ..config.settings import Settings


def host_limits(settings: Settings) -> tuple[int, int]:
    """The leader's buffer (entries waiting in memory at most), and the share a saturated host may always keep."""
    # At the global rate a full buffer drains in a sixth of the claim idle time,
    # well inside the hosts' shedding age (a third), so healthy work is not shed.
    by_rate = int(settings.rate * settings.claim_idle / 6)
    buffer = max(1, min(2 * settings.batch_size, by_rate))
    return buffer, min(buffer, 2 * settings.host_concurrency)


@functools.lru_cache(maxsize=16384)  # a burst repeats few URLs; parsing each twice per delivery adds up
def host_of(url: str) -> str:
    """The connection target that concurrency is counted against: ``host:port`` (the shard key too)."""
    return host_port(url)


class HostQueues:
    """Waiting callbacks grouped by host, with at most ``concurrency`` in flight per host."""

    def __init__(self, concurrency: int, buffer: int, min_share: int = 1, max_wait: float = float("inf")) -> None:
        self.concurrency = concurrency
        self.buffer = buffer
        self.min_share = max(1, min_share)
        self.max_wait = max_wait
        self._waiting: OrderedDict[str, deque[tuple[CallbackEntry, float]]] = OrderedDict()
        self._in_flight: dict[str, int] = {}
        self._held: set[str] = set()
        self.waiting = 0
        self.in_flight = 0

    def reshape(self, concurrency: int, buffer: int, min_share: int) -> None:
        """New limits (a run-time configuration change); what waits or flies stays."""
        self.concurrency, self.buffer, self.min_share = concurrency, buffer, max(1, min_share)

    def holds(self, stream_id: str | None) -> bool:
        """Whether this entry is already waiting or in flight here."""
        return stream_id in self._held

    def _saturated(self, host: str) -> bool:
        return self._in_flight.get(host, 0) >= self.concurrency

    def share(self) -> int:
        """How many waiting entries a saturated host may keep: its fair part of the buffer."""
        return max(self.min_share, self.buffer // max(1, len(self._waiting)))

    def offer(self, entry: CallbackEntry, now: float | None = None) -> bool:
        """Queue ``entry``; ``False`` when its host is saturated with a full buffer (the caller defers it)."""
        host = host_of(entry.url)
        queue = self._waiting.get(host)
        if queue is not None and self._saturated(host) and len(queue) >= self.share():
            return False
        if queue is None:
            queue = self._waiting[host] = deque()
        queue.append((entry, time.monotonic() if now is None else now))
        self._held.add(_identity(entry))
        self.waiting += 1
        return True

    def startable(self) -> int:
        """How many waiting entries could start now (hosts with a free slot)."""
        total = 0
        for host, queue in self._waiting.items():
            free = self.concurrency - self._in_flight.get(host, 0)
            total += min(free, len(queue))
        return total

    def take(self) -> CallbackEntry | None:
        """The next entry to start, round-robin over hosts with a free slot; marks it in flight."""
        for host in list(self._waiting):
            if self._saturated(host):
                continue
            queue = self._waiting[host]
            entry, _ = queue.popleft()
            if queue:
                self._waiting.move_to_end(host)  # the next take starts with another host
            else:
                del self._waiting[host]
            self._in_flight[host] = self._in_flight.get(host, 0) + 1
            self.waiting -= 1
            self.in_flight += 1
            return entry
        return None

    def done(self, entry: CallbackEntry) -> None:
        """An in-flight entry finished (whatever the outcome)."""
        host = host_of(entry.url)
        left = self._in_flight[host] - 1
        if left:
            self._in_flight[host] = left
        else:
            del self._in_flight[host]
        self.in_flight -= 1
        self._held.discard(_identity(entry))

    def shed(self, now: float | None = None) -> list[CallbackEntry]:
        """Remove and return what should wait elsewhere: a saturated host's overflow and overdue entries."""
        now = time.monotonic() if now is None else now
        share = self.share()
        out: list[CallbackEntry] = []
        for host in list(self._waiting):
            queue = self._waiting[host]
            while queue and now - queue[0][1] >= self.max_wait:
                out.append(queue.popleft()[0])
            if self._saturated(host):
                while len(queue) > share:
                    out.append(queue.pop()[0])
            if not queue:
                del self._waiting[host]
        self._forget(out)
        return out

    def drain(self) -> list[CallbackEntry]:
        """Remove and return every waiting (unstarted) entry."""
        out = [entry for queue in self._waiting.values() for entry, _ in queue]
        self._waiting.clear()
        self._forget(out)
        return out

    def _forget(self, entries: list[CallbackEntry]) -> None:
        for entry in entries:
            self._held.discard(_identity(entry))
        self.waiting -= len(entries)

    def saturated_hosts(self) -> int:
        """Hosts with every slot in use (for metrics and status)."""
        return sum(1 for count in self._in_flight.values() if count >= self.concurrency)


def _identity(entry: CallbackEntry) -> str:
    return entry.stream_id or entry.callback_id
