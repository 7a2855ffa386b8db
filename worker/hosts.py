"""Per-host fairness: callbacks wait per host, and a host with no free slot never blocks another.

Pure bookkeeping, no I/O: the leader offers entries, takes the next startable
one (round-robin over hosts with a free slot) and reports when one finishes.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from urllib.parse import urlsplit

from .streams.entry import CallbackEntry


def host_of(url: str) -> str:
    """The connection target that concurrency is counted against: ``host:port``."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{(parts.hostname or '').lower()}:{port}"


class HostQueues:
    """Waiting callbacks grouped by host, with at most ``concurrency`` in flight per host."""

    def __init__(self, concurrency: int, buffer_per_host: int) -> None:
        self.concurrency = concurrency
        self.buffer_per_host = buffer_per_host
        self._waiting: OrderedDict[str, deque[CallbackEntry]] = OrderedDict()
        self._in_flight: dict[str, int] = {}
        self._held: set[str] = set()
        self.waiting = 0
        self.in_flight = 0

    def holds(self, stream_id: str | None) -> bool:
        """Whether this entry is already waiting or in flight here."""
        return stream_id in self._held

    def offer(self, entry: CallbackEntry) -> bool:
        """Queue ``entry``; ``False`` when its host's buffer is full (the caller defers it)."""
        host = host_of(entry.url)
        queue = self._waiting.get(host)
        if queue is None:
            queue = self._waiting[host] = deque()
        if len(queue) >= self.buffer_per_host:
            return False
        queue.append(entry)
        self._held.add(entry.stream_id or entry.callback_id)
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
            queue = self._waiting[host]
            if self._in_flight.get(host, 0) >= self.concurrency:
                continue
            entry = queue.popleft()
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
        self._held.discard(entry.stream_id or entry.callback_id)

    def drain(self) -> list[CallbackEntry]:
        """Remove and return every waiting (unstarted) entry."""
        out = [entry for queue in self._waiting.values() for entry in queue]
        self._waiting.clear()
        for entry in out:
            self._held.discard(entry.stream_id or entry.callback_id)
        self.waiting = 0
        return out

    def saturated_hosts(self) -> int:
        """Hosts with every slot in use (for metrics and status)."""
        return sum(1 for count in self._in_flight.values() if count >= self.concurrency)
