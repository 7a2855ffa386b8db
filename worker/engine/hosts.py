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
refused or shed for its size. A host held back by its own pace beyond its
spacing (a Retry-After, an open circuit, an operator's pause; see
:mod:`.adaptive`) counts as saturated: it keeps its share, the rest is deferred.

Each host's :class:`~.adaptive.HostPace` spaces its starts (:meth:`HostQueues.take`
passes over a host not due yet) and caps what it keeps here to ``PACED_HOLD`` s.
"""

from __future__ import annotations

import functools
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..streams.entry import CallbackEntry
from ..streams.shards import host_port
from . import adaptive
from .adaptive import HostPace

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


READY_SLACK = 0.001  # seconds: a host due this soon may start now
ALLOWANCE = 0.25  # seconds of a host's rate one reservation may count for it
PACED_HOLD = 2.0  # seconds of a host's starts its queue may hold in memory; the rest waits in the delayed set
PAUSE_PARK = 3.0  # seconds a paused host's callback is parked at a time (a resume applies within this)


class HostQueues:
    """Waiting callbacks grouped by host, with at most ``concurrency`` in flight per host, each host paced."""

    def __init__(
        self,
        concurrency: int,
        buffer: int,
        min_share: int = 1,
        max_wait: float = float("inf"),
        *,
        ceiling: Callable[[str], float] = lambda host: math.inf,
        global_rate: float = math.inf,
        adaptive: bool = False,
        probe_interval: float = 10.0,
    ) -> None:
        self.concurrency = concurrency
        self.buffer = buffer
        self.min_share = max(1, min_share)
        self.max_wait = max_wait
        self.ceiling = ceiling  # host -> the most it is paced at
        self.global_rate = global_rate  # a host at this pace is spaced by the global pace alone
        self.adaptive = adaptive  # learn from refusals and failures (else only the ceilings apply)
        self.probe_interval = probe_interval
        self._waiting: OrderedDict[str, deque[tuple[CallbackEntry, float]]] = OrderedDict()
        self._in_flight: dict[str, int] = {}
        self._held: set[str] = set()
        self._probes: set[str] = set()  # entries in flight as an open circuit's probe
        self._later: dict[str, float] = {}  # refused or shed for their host's pace: seconds until it may start
        self.paces: dict[str, HostPace] = {}
        self.waiting = 0
        self.in_flight = 0

    def reshape(self, concurrency: int, buffer: int, min_share: int) -> None:
        """New limits (a run-time configuration change); what waits or flies stays."""
        self.concurrency, self.buffer, self.min_share = concurrency, buffer, max(1, min_share)

    def holds(self, stream_id: str | None) -> bool:
        """Whether this entry is already waiting or in flight here."""
        return stream_id in self._held

    def _saturated(self, host: str, now: float | None = None) -> bool:
        if self._in_flight.get(host, 0) >= self.concurrency:
            return True
        pace = self.paces.get(host)
        return pace is not None and pace.blocked(time.time() if now is None else now)

    def pace(self, host: str) -> HostPace:
        """The host's pace, made at its ceiling when first seen."""
        pace = self.paces.get(host)
        if pace is None:
            pace = self.paces[host] = HostPace(rate=self.ceiling(host))
        return pace

    def _cap(self, host: str) -> int:
        # The most a host keeps waiting here: PACED_HOLD seconds of its pace (never below min_share).
        return max(self.min_share, int(min(self.pace(host).rate, 1e6) * PACED_HOLD))

    def _back_in(self, host: str, ahead: int) -> float:
        # When a paced host's overflow should be read again: once what waits here has about drained (its
        # rate grows meanwhile, so never later than PACED_HOLD: the queue here holds that much).
        return min(PACED_HOLD, ahead / self.pace(host).rate)

    def _ready(self, host: str, now: float) -> bool:
        return self._in_flight.get(host, 0) < self.concurrency and self.pace(host).ready_at() <= now + READY_SLACK

    def share(self) -> int:
        """How many waiting entries a saturated host may keep: its fair part of the buffer."""
        return max(self.min_share, self.buffer // max(1, len(self._waiting)))

    def offer(self, entry: CallbackEntry, now: float | None = None) -> bool:
        """Queue ``entry``; ``False`` when its host is saturated with a full buffer (the caller defers it)."""
        host = host_of(entry.url)
        queue = self._waiting.get(host)
        if queue is not None:
            if len(queue) >= self._cap(host):  # a paced host: what it cannot start soon waits in Redis
                self._later[_identity(entry)] = self._back_in(host, len(queue))
                return False
            if self._saturated(host) and len(queue) >= self.share():
                return False
        if queue is None:
            queue = self._waiting[host] = deque()
        queue.append((entry, time.monotonic() if now is None else now))
        self._held.add(_identity(entry))
        self.waiting += 1
        return True

    def startable(self, now: float | None = None) -> int:
        """How many waiting entries could start now (hosts with a free slot whose pace lets them start)."""
        now = time.time() if now is None else now
        total = 0
        for host, queue in self._waiting.items():
            if not self._ready(host, now):
                continue
            free = self.concurrency - self._in_flight.get(host, 0)
            allowance = max(1, int(min(self.pace(host).rate, 1e9) * ALLOWANCE))
            total += min(free, len(queue), allowance)
        return total

    def next_ready(self, now: float | None = None) -> float | None:
        """Seconds until a waiting host with a free slot may start (``None``: none will by itself)."""
        now = time.time() if now is None else now
        due = [self.pace(host).ready_at() for host in self._waiting if self._in_flight.get(host, 0) < self.concurrency]
        soonest = min(due, default=math.inf)
        return None if soonest == math.inf else max(0.0, soonest - now)

    def take(self, now: float | None = None) -> CallbackEntry | None:
        """The next entry to start, round-robin over hosts that may start now; marks it in flight."""
        now = time.time() if now is None else now
        for host in list(self._waiting):
            if not self._ready(host, now):
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
            if adaptive.start(self.pace(host), now, self.global_rate):
                self._probes.add(_identity(entry))
            return entry
        return None

    def learn(
        self, entry: CallbackEntry, status: int | None, error: str | None, retry_after: float | None, now: float
    ) -> None:
        """What an attempt's answer says about its host (call before :meth:`done`)."""
        host = host_of(entry.url)
        pace = self.pace(host)
        probe = _identity(entry) in self._probes
        if self.adaptive:
            ceiling, interval = self.ceiling(host), self.probe_interval
            adaptive.observe(
                pace, now, status=status, error=error, retry_after=retry_after, probe=probe, ceiling=ceiling,
                probe_interval=interval,
            )  # fmt: skip
        else:
            pace.last_status = status
        if probe and pace.circuit == adaptive.HALF_OPEN:  # its answer said nothing of the host (our own guard)
            pace.circuit, pace.probe_at = adaptive.OPEN, now + self.probe_interval

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
        self._probes.discard(_identity(entry))

    def shed(self, now: float | None = None) -> list[CallbackEntry]:
        """Remove and return what should wait elsewhere: a saturated host's overflow and overdue entries."""
        now = time.monotonic() if now is None else now
        wall = time.time()
        share = self.share()
        out: list[CallbackEntry] = []
        for host in list(self._waiting):
            queue = self._waiting[host]
            while queue and now - queue[0][1] >= self.max_wait:
                out.append(queue.popleft()[0])
            if self._saturated(host, wall):
                while len(queue) > share:
                    out.append(queue.pop()[0])
            cap = self._cap(host)
            while len(queue) > cap:
                entry = queue.pop()[0]
                self._later[_identity(entry)] = self._back_in(host, len(queue))
                out.append(entry)
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

    def parking(self, entry: CallbackEntry, now: float | None = None) -> tuple[str, float, bool] | None:
        """Why ``entry`` waits outside (its host is held back, or paced), for how long (s), and whether it may
        expire for it (``CALLBACK_MAX_AGE``: a circuit or a pause, not a pace); ``None``: the host is merely full."""
        later = self._later.pop(_identity(entry), None)
        pace = self.paces.get(host_of(entry.url))
        now = time.time() if now is None else now
        if pace is None or not pace.blocked(now):
            return None if later is None else ("its host's pace", later, False)
        pace.last_held = now
        if pace.held_until > now:  # parked briefly: a resume must not wait for a long parking to end
            return "paused by an operator", min(PAUSE_PARK, pace.held_until - now), True
        if pace.circuit != adaptive.CLOSED:
            return "its circuit is open", max(0.0, pace.probe_at - now), True
        return "it asked to wait (Retry-After)", max(later or 0.0, pace.paused_until - now), False

    def load(self, host: str) -> tuple[int, int]:
        """``(in flight, waiting)`` of ``host``."""
        return self._in_flight.get(host, 0), len(self._waiting.get(host, ()))

    def recast(self, ceiling: Callable[[str], float], global_rate: float, adaptive_on: bool) -> None:
        """New ceilings (a run-time change): no host is paced above its ceiling; without adaptation, at it."""
        self.ceiling, self.global_rate, self.adaptive = ceiling, global_rate, adaptive_on
        for host, pace in self.paces.items():
            top = ceiling(host)
            pace.rate = min(pace.rate, top) if adaptive_on and pace.capacity else top
            pace.changed = True

    def forget_quiet(self, now: float, quiet: float) -> list[str]:
        """Drop the paces of hosts idle (nothing waiting or in flight, no answer) for ``quiet`` s; their names."""
        gone = [
            host
            for host, pace in self.paces.items()
            if host not in self._waiting
            and host not in self._in_flight
            and now - max(pace.last_success, pace.cut_at, pace.paused_until, pace.last_held) > quiet
            and pace.held_until == 0
        ]
        for host in gone:
            del self.paces[host]
        return gone


def _identity(entry: CallbackEntry) -> str:
    return entry.stream_id or entry.callback_id
