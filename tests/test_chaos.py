"""The chaos run (issue 9, "Prove it"): every fault at once, nothing lost, duplicates bounded.

Three ``dramatiq worker.actors`` groups deliver 3,000 callbacks that the test enqueues in
batches while the faults happen: kill -9 of the leader's group mid-delivery (four times, a
new group started at once), ``CLIENT KILL TYPE normal`` on the private Redis (twice), a
restart of that AOF Redis (once; the producer retries ``EnqueueFailed`` until it is back),
and a receiver that answers 500 to 30 % of requests.

At the end every accepted callback was delivered (answered 2xx) at least once or is a dead
letter whose reason says why; the stream, the delayed set and the pending list are empty.

The duplicate bound. A duplicate is a 2xx beyond the first for one webhook-id: an attempt
was answered 2xx but its ack never reached Redis, so the entry stayed pending and was sent
again after a reclaim. Settle writes are not fenced, and a failed one is kept and retried
(a retry of one that did run only deletes), so an outcome is lost only with its process
(kill -9), or when a leader whose lease lapsed while Redis was away steps down and its
final flush fails too. Each loss sends the entry once more (one reclaim). So the duplicates
are at most the callbacks *at risk*, summed over the faults (``testkit.chaos``): entries
pending at the fault that were answered 2xx after their consumer read or claimed them and
before ``until``:

- a kill: ``GRACE`` after it, for the dead process's last requests to land (no one can
  reclaim that soon: the lease outlives the kill by more than that);
- a drop: the drop itself (+ ``TRANSIT``): only settle calls cut by it carry outcomes of
  answers before it; every client reconnects on its next command, and one failed renewal
  does not lapse a lease of ``LEASE_TTL``, so what is answered later is settled later;
- the restart: Redis back (+ ``GRACE``): a leader dispatches nothing without Redis (its pace
  lives there); one that lapsed meanwhile stops dispatching and flushes to the live Redis.

Entries read after a drop or the restart are not at risk from it, nor are the entries of
killed consumers (counted at their kill). Faults wait for a leader that is delivering.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import WorkerProcess, settings_env, wait_until

from testkit.chaos import Fault, assess, chaos_answers, consumer_pid, dead_letters, held_entries
from testkit.receiver import Receiver
from testkit.servers import PrivateRedis
from worker.config.settings import Settings
from worker.errors import EnqueueFailed
from worker.producer import CallbackProducer
from worker.streams.client import sync_client
from worker.streams.keys import Keys

pytestmark = pytest.mark.slow
pytest_plugins = ("storage_fixtures",)

CALLBACKS = 3000
BATCH = 100
GROUPS = 3
FAIL_PERCENT = 30
MAX_ATTEMPTS = 8  # 0.3 ** 8 * 3000: 0.2 callbacks run out of attempts per run, on average
RATE = 400  # deliveries/s: slower than the 30 batches arrive, so every fault lands mid-delivery
LEASE_TTL = 2.0
TIMEOUT = 2.0
CLAIM_IDLE = 7.0
REDIS_DOWN = 1.0  # seconds the private Redis stays down
GRACE = 0.5  # seconds in which requests sent before a kill or before Redis is back surely land
TRANSIT = 0.05  # seconds in which a request answered before a drop reaches the receiver's log
# Faults by the batch they follow.
FAULTS = {3: "kill", 6: "drop", 10: "kill", 14: "restart", 18: "kill", 22: "drop", 25: "kill"}
DRAIN_TIMEOUT = 45.0


class Groups:
    """The worker groups: started, the leader's killed (kill -9 of its process group) and replaced."""

    def __init__(self, env: dict[str, str], logs: Path, client: redis.Redis, keys: Keys) -> None:
        self._env, self._logs, self._client, self._keys = env, logs, client, keys
        self.started: list[WorkerProcess] = []
        self.live: list[WorkerProcess] = []
        self.killed: list[int] = []  # pids of the killed leaders: what they held was counted at their kill

    def start(self) -> None:
        worker = WorkerProcess(self._env, processes=1, threads=2, log=self._logs / f"group-{len(self.started)}.log")
        self.started.append(worker)
        self.live.append(worker)

    def leader(self) -> tuple[int, WorkerProcess] | None:
        """The leading process's pid and its group, if a live group leads."""
        try:
            pid = consumer_pid(self._client.hget(self._keys.lease_info, "holder") or "")  # named like a consumer
        except redis.RedisError:
            return None
        try:
            group = os.getpgid(pid) if pid is not None else None
        except ProcessLookupError:
            return None
        owner = next((w for w in self.live if w.proc.pid == group), None)
        return (pid, owner) if pid is not None and owner is not None else None

    def delivering(self, receiver: Receiver) -> tuple[int, WorkerProcess]:
        """Wait for a live leader that delivers (a fault right after a kill would find none); its pid and group."""
        assert wait_until(lambda: self.leader() is not None, 20), "no live leader\n" + self.tail()
        found = self.leader()
        assert found is not None
        arrived = len(receiver.ids())
        wait_until(lambda: len(receiver.ids()) >= arrived + 20, 3)  # mid-delivery, when there is work
        return found

    def kill_leader(self, fault: Fault, receiver: Receiver) -> None:
        """kill -9 the leader's group while it delivers, note what it held, start a new group."""
        pid, doomed = self.delivering(receiver)
        doomed.kill()
        fault.at = time.time()
        self.live.remove(doomed)
        self.killed.append(pid)
        fault.held = held_entries(self._client, self._keys, pid=pid)  # only a reclaim (CLAIM_IDLE on) takes them
        fault.until = fault.at + GRACE
        self.start()

    def tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {w.log}\n{w.output()[-chars:]}" for w in self.started)

    def stop(self) -> None:
        for worker in self.started:
            worker.kill()
            worker.stop()


def drained(client: redis.Redis, keys: Keys, receiver: Receiver, accepted: set[str]) -> bool:
    """Stream, delayed set and pending list empty; every accepted id delivered or dead-lettered."""
    if client.xlen(keys.stream) or client.zcard(keys.delayed) or held_entries(client, keys):
        return False
    arrivals = receiver.snapshot()
    delivered = {a.webhook_id for a, ok in zip(arrivals, chaos_answers(arrivals, FAIL_PERCENT), strict=True) if ok}
    missing = accepted - delivered
    return not missing or missing <= {fields["cid"] for fields in dead_letters(client, keys)}


def enqueue(producer: CallbackProducer, requests: list[tuple[str, Any]], deadline: float) -> tuple[list[str], int]:
    """Enqueue one batch, retrying ``EnqueueFailed`` (Redis down) until ``deadline``; (ids, failed tries)."""
    failures = 0
    while True:
        try:
            return producer.enqueue_many(requests), failures
        except EnqueueFailed:
            failures += 1
            assert time.monotonic() < deadline, "Redis did not take the batch back in time"
            time.sleep(0.1)


def restart_later(server: PrivateRedis, fault: Fault, errors: list[BaseException]) -> None:
    """Start ``server`` again after ``REDIS_DOWN`` s, in a thread (the producer retries meanwhile)."""

    def start() -> None:
        try:
            server.start()
            fault.until = time.time() + GRACE  # the requests then on their way land
        except BaseException as e:  # seen by the test, not lost in the thread
            errors.append(e)

    threading.Timer(REDIS_DOWN, start).start()


def test_chaos_run_loses_nothing_and_bounds_duplicates(private_redis, sqlite_url, tmp_path, record_property):
    began = time.time()
    namespace = f"chaos{uuid.uuid4().hex[:8]}"  # the private Redis is the test's own: no other keys to spare
    keys = Keys(namespace)
    env = settings_env(
        namespace,
        private_redis.url,
        DATABASE_URL=sqlite_url,
        CALLBACK_RATE=RATE,
        CALLBACK_TIMEOUT=TIMEOUT,
        CALLBACK_CLAIM_IDLE=CLAIM_IDLE,
        CALLBACK_LEASE_TTL=LEASE_TTL,
        CALLBACK_RETRY_SCHEDULE="0.2,0.5",
        CALLBACK_MAX_ATTEMPTS=MAX_ATTEMPTS,
        CALLBACK_MAX_DELIVERIES=20,  # above the reads per entry the faults can cause: no poison letters
    )
    client = sync_client(private_redis.url)
    receiver = Receiver(env["CALLBACK_SIGNING_SECRET"]).start()
    groups = Groups(env, tmp_path, client, keys)
    producer = CallbackProducer(Settings.from_env(env))
    faults: list[Fault] = []
    number_of: dict[str, int] = {}  # accepted webhook-id -> its payload's n
    enqueue_failures = 0
    restart_errors: list[BaseException] = []
    try:
        for _ in range(GROUPS):
            groups.start()
        url = f"{receiver.url}/chaos/{FAIL_PERCENT}"
        for batch in range(CALLBACKS // BATCH):
            numbers = range(batch * BATCH, (batch + 1) * BATCH)
            ids, failed = enqueue(producer, [(url, {"n": n}) for n in numbers], time.monotonic() + 20)
            enqueue_failures += failed
            number_of.update(zip(ids, numbers, strict=True))
            if (kind := FAULTS.get(batch)) is None:
                time.sleep(0.3)
                continue
            fault = Fault(kind, batch, time.time())
            faults.append(fault)
            if kind == "kill":
                groups.kill_leader(fault, receiver)
                continue
            groups.delivering(receiver)
            fault.held = held_entries(client, keys, dead=groups.killed)
            fault.at = time.time()
            if kind == "drop":
                client.client_kill_filter(_type="normal", skipme=True)
                fault.until = time.time() + TRANSIT
            else:
                private_redis.stop()
                restart_later(private_redis, fault, restart_errors)
        accepted = set(number_of)
        drained_in_time = wait_until(lambda: drained(client, keys, receiver, accepted), DRAIN_TIMEOUT, interval=0.2)
        dead = dead_letters(client, keys)
        left = {"stream": client.xlen(keys.stream), "delayed": client.zcard(keys.delayed)}
        left["pending"] = len(held_entries(client, keys))
    finally:
        groups.stop()
        receiver.stop()
        producer.close()
        client.close()

    arrivals = receiver.snapshot()
    answers = chaos_answers(arrivals, FAIL_PERCENT)
    for fault in faults:
        assess(fault, arrivals, answers)
    delivered = Counter(a.webhook_id for a, ok in zip(arrivals, answers, strict=True) if ok)
    dead_ids = {fields["cid"] for fields in dead}
    duplicates = sum(count - 1 for count in delivered.values())
    bound = sum(fault.at_risk for fault in faults)
    figures = {
        "accepted": len(number_of),
        "delivered": len(delivered),
        "dead_lettered": len(dead_ids),
        "duplicates": duplicates,
        "duplicate_bound": bound,
        "at_risk_at_kills": sum(fault.at_risk for fault in faults if fault.kind == "kill"),
        "requests": len(arrivals),
        "enqueue_failures": enqueue_failures,
        "left": left,
        "faults": [fault.figures(began) for fault in faults],
        "seconds": round(time.time() - began, 1),
    }
    print(f"\nchaos run: {json.dumps(figures)}")
    record_property("chaos", json.dumps(figures))

    assert drained_in_time, f"not drained in {DRAIN_TIMEOUT:g} s: {figures}\n{groups.tail()}"
    assert left == {"stream": 0, "delayed": 0, "pending": 0}
    assert restart_errors == []
    assert len(number_of) == CALLBACKS
    assert enqueue_failures > 0  # the producer did retry while Redis was down
    assert [a.webhook_id for a in arrivals if a.webhook_id not in number_of] == []  # nothing never accepted
    assert all(a.verified for a in arrivals)
    assert all(json.loads(a.body) == {"n": number_of[a.webhook_id]} for a in arrivals)
    lost = set(number_of) - set(delivered) - dead_ids
    assert lost == set(), f"{len(lost)} callbacks neither delivered nor dead-lettered"
    for fields in dead:  # 500s are retried: only running out of attempts dead-letters a callback here
        assert fields["reason"] == f"exhausted: {MAX_ATTEMPTS} attempts, last HTTP 500", fields
    assert any(fault.in_flight for fault in faults if fault.kind == "kill")  # the kills caught deliveries
    assert duplicates <= bound, figures
