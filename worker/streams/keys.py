"""Every Redis key the worker uses, built in one place.

Layout for namespace ``cbw`` and queue ``default`` (the ``{default}`` hash tag
keeps one queue's keys in one Redis Cluster slot, so scripts and MULTI work):

==============================  ======  ==========================================================
key                             type    holds
==============================  ======  ==========================================================
``cbw:{default}:stream``        stream  callbacks waiting or in flight; group ``deliverers``.
                                        Entries are deleted when settled, so it never needs trimming.
``cbw:{default}:delayed``       zset    retries and deferred entries, scored by due time (ms);
                                        members are JSON entries, moved back by ``promote.lua``.
``cbw:{default}:dlq``           stream  dead letters: the entry plus reason, status code, attempts.
``cbw:{default}:leader``        string  the leader lease: its holder's token (PX = lease TTL).
``cbw:{default}:leader:info``   hash    ``holder`` (``host:pid:token prefix``), ``epoch``, ``acquired_ms``,
                                        ``renewed_ms``, ``released_ms`` (for operators).
``cbw:{default}:epoch``         string  the leader's fencing epoch, +1 on every acquisition.
``cbw:{default}:election``      string  debounces the watchdogs' "start a leader" message.
``cbw:{default}:pace``          string  GCRA theoretical arrival time (µs, Redis clock).
``cbw:{default}:stats``         hash    counters and last-send time, for ``ops status``.
``cbw:{default}:config``        string  run-time configuration: JSON ``{version, values}``.
``cbw:{default}:status``        stream  status updates for the database, many per entry (JSON array);
                                        read by the status writer's group ``writers``. Same hash tag,
                                        so the leader's settle script writes them atomically with acks.
``cbw:{default}:status:bad``    stream  malformed status entries the writer set aside: ``u`` as received,
                                        ``error``, ``id`` (the source entry id); capped (MAXLEN ~).
``cbw:{default}:writer``        string  the status writer lease: its holder's token (PX = lease TTL). A writer
                                        of an earlier version stored ``host:pid:token`` here, with no info.
``cbw:{default}:writer:info``   hash    the writer's ``holder``, ``epoch``, times: as ``leader:info``.
``cbw:{default}:writer:epoch``  string  the writer's fencing epoch, +1 on every acquisition.
``cbw:{default}:writer:vote``   string  debounces the watchdogs' "start a status writer" message.
``cbw:{default}:status:committed`` string  shard 0's last status entry id the writer committed (after-commit).
``cbw:{default}:hosts``         hash    learned state per host:port (JSON: rate, pause, circuit, last status).
``cbw:{default}:hosts:paused``  hash    hosts an operator paused: host:port -> until (ms; 0 = until resumed).
``cbw:{default}:shards``        set     every shard count a producer or worker used (``CALLBACK_SHARDS``):
                                        shards past the current count are led until they drain.
``cbw:{default}:fleet``         hash    worker processes leading shards: holder -> ``<shards led>:<ms>``,
                                        refreshed by every process's lease watch (spreads leaderships).
``cbw:dramatiq:*``              various the Dramatiq broker's own keys (namespace ``cbw:dramatiq``).
==============================  ======  ==========================================================

Shards (``CALLBACK_SHARDS=N``): shard 0 is the layout above; shard ``i >= 1`` has
the same per-queue keys under the hash tag ``{default:i}`` (``cbw:{default:1}:stream``
...), so each shard's keys share one Cluster slot and shards spread over nodes.
Per shard: stream, delayed, dlq, leader lease (+ info, epoch, election), stats,
status stream (+ ``status:bad``). For the whole namespace, on shard 0 whatever
:class:`Keys` asks: pace (one global rate), config, the status writer's lease,
shards, fleet. A callback's shard is chosen by its ``host:port`` (:mod:`.shards`).
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "deliverers"
STATUS_GROUP = "writers"


@dataclass(frozen=True)
class LeaseKeys:
    """The three keys of one lease (``lease.lua``'s KEYS): the lease, its info hash, its fencing epoch."""

    lease: str
    info: str
    epoch: str


@dataclass(frozen=True)
class Keys:
    """Key names of one shard (default 0) of one queue of one namespace."""

    namespace: str
    queue: str = "default"
    shard: int = 0

    @property
    def _tag(self) -> str:
        tag = self.queue if self.shard == 0 else f"{self.queue}:{self.shard}"
        return f"{self.namespace}:{{{tag}}}"

    @property
    def _home(self) -> str:  # the namespace's keys: on shard 0, whichever shard asks
        return f"{self.namespace}:{{{self.queue}}}"

    def of_shard(self, shard: int) -> Keys:
        """The keys of shard ``shard`` of the same queue."""
        return Keys(self.namespace, self.queue, shard)

    def shards(self, count: int) -> list[Keys]:
        """The keys of shards ``0 .. count - 1``."""
        return [self.of_shard(shard) for shard in range(count)]

    @property
    def label(self) -> str:
        """How logs and ``ops`` name this shard: ``default`` or ``default:3``."""
        return self.queue if self.shard == 0 else f"{self.queue}:{self.shard}"

    @property
    def stream(self) -> str:
        return f"{self._tag}:stream"

    @property
    def delayed(self) -> str:
        return f"{self._tag}:delayed"

    @property
    def dead(self) -> str:
        return f"{self._tag}:dlq"

    @property
    def lease(self) -> str:
        return f"{self._tag}:leader"

    @property
    def lease_info(self) -> str:
        return f"{self._tag}:leader:info"

    @property
    def epoch(self) -> str:
        return f"{self._tag}:epoch"

    @property
    def leader_lease(self) -> LeaseKeys:
        """The leader's lease keys."""
        return LeaseKeys(self.lease, self.lease_info, self.epoch)

    @property
    def election(self) -> str:
        return f"{self._tag}:election"

    @property
    def pace(self) -> str:
        return f"{self._home}:pace"

    @property
    def config(self) -> str:
        return f"{self._home}:config"

    @property
    def stats(self) -> str:
        return f"{self._tag}:stats"

    @property
    def status_updates(self) -> str:
        return f"{self._tag}:status"

    @property
    def status_bad(self) -> str:
        return f"{self._tag}:status:bad"

    @property
    def status_lease(self) -> str:
        return f"{self._home}:writer"

    @property
    def writer_lease(self) -> LeaseKeys:
        """The status writer's lease keys (the lease key is ``status_lease``, unchanged); one for all shards."""
        return LeaseKeys(self.status_lease, f"{self._home}:writer:info", f"{self._home}:writer:epoch")

    @property
    def status_election(self) -> str:
        return f"{self._home}:writer:vote"

    @property
    def status_committed(self) -> str:
        """The id of shard 0's last status entry whose updates the writer has committed (CALLBACK_AFTER_COMMIT)."""
        return f"{self._home}:status:committed"

    @property
    def hosts(self) -> str:
        """This shard's learned per-host state: host:port -> JSON (rate, pause, circuit, last status)."""
        return f"{self._tag}:hosts"

    @property
    def hosts_paused(self) -> str:
        """Hosts of this shard an operator paused: host:port -> until (ms; 0: until resumed)."""
        return f"{self._tag}:hosts:paused"

    @property
    def shard_counts(self) -> str:
        return f"{self._home}:shards"

    @property
    def fleet(self) -> str:
        return f"{self._home}:fleet"

    @property
    def dramatiq_namespace(self) -> str:
        return f"{self.namespace}:dramatiq"

    def all_patterns(self) -> tuple[str, ...]:
        """Glob patterns that match every key of the namespace (for ``ops reset``)."""
        return (f"{self.namespace}:{{*}}:*", f"{self.dramatiq_namespace}*")
