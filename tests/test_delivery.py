"""End-to-end delivery through a real leader, real Redis and a real local receiver."""

from __future__ import annotations

import itertools
import json
import threading

from conftest import SECRET, recorded_updates, run_burst
from standardwebhooks.webhooks import Webhook

from worker.producer import CallbackProducer


def test_delivers_signed_callbacks_that_the_public_verifier_accepts(make_settings, receiver, rclient, keys):
    settings = make_settings()
    producer = CallbackProducer(settings)
    ids = producer.enqueue_many([(f"{receiver.url}/ok", {"n": n}, f"task-{n}") for n in range(50)])

    outcome = run_burst(settings)

    assert outcome.reason == "idle"
    arrivals = receiver.snapshot()
    assert sorted(a.webhook_id for a in arrivals) == sorted(ids)
    verifier = Webhook(SECRET)
    for arrival in arrivals:
        assert arrival.verified is True
        assert verifier.verify(arrival.body, arrival.headers) == json.loads(arrival.body)
        assert arrival.headers["Content-Type"] == "application/json"
    assert rclient.xlen(keys.stream) == 0
    assert rclient.hget(keys.stats, "delivered") == "50"


def _dead_letters(rclient, keys) -> dict[str, dict[str, str]]:
    return {fields["cid"]: fields for _, fields in rclient.xrange(keys.dead)}


def _status_updates(rclient, keys) -> list[dict]:
    return [u.as_json() for u in recorded_updates(rclient, keys)]


def test_retries_5xx_429_and_timeouts_with_a_stable_webhook_id(make_settings, receiver, rclient, keys):
    settings = make_settings(CALLBACK_TIMEOUT="0.5", CALLBACK_RETRY_SCHEDULE="0.05", CALLBACK_MAX_ATTEMPTS="3")
    producer = CallbackProducer(settings)
    flaky = producer.enqueue(f"{receiver.url}/flaky/2", {"case": "flaky"})
    always_500 = producer.enqueue(f"{receiver.url}/status/503", {"case": "503"})
    throttled = producer.enqueue(f"{receiver.url}/status/429", {"case": "429"})
    hanging = producer.enqueue(f"{receiver.url}/hang", {"case": "hang"})

    run_burst(settings)

    assert receiver.ids("/flaky/2") == [flaky] * 3  # two 500s, then delivered
    assert receiver.ids("/status/503") == [always_500] * 3
    assert receiver.ids("/status/429") == [throttled] * 3
    assert receiver.ids("/hang") == [hanging] * 3
    dead = _dead_letters(rclient, keys)
    assert set(dead) == {always_500, throttled, hanging}
    assert dead[always_500]["reason"] == "exhausted: 3 attempts, last HTTP 503"
    assert dead[always_500]["status"] == "503" and dead[always_500]["att"] == "3"
    assert dead[hanging]["reason"] == "exhausted: 3 attempts, last timeout"
    assert dead[hanging]["status"] == ""


def test_retry_after_is_honoured(make_settings, receiver):
    settings = make_settings(CALLBACK_RETRY_SCHEDULE="0.05")
    callback_id = CallbackProducer(settings).enqueue(f"{receiver.url}/retry-after/1", {"x": 1})

    run_burst(settings)

    first, second = (a for a in receiver.snapshot() if a.webhook_id == callback_id)
    assert second.at - first.at >= 1.0  # the receiver asked for 1 s; the schedule alone says 0.05 s


def test_final_4xx_and_redirects_go_to_the_dead_letters_after_one_attempt(make_settings, receiver, rclient, keys):
    settings = make_settings()
    producer = CallbackProducer(settings)
    gone = producer.enqueue(f"{receiver.url}/status/410", {"x": 1}, task_id="task-gone")
    moved = producer.enqueue(f"{receiver.url}/redirect", {"x": 2})

    run_burst(settings)

    assert receiver.ids("/status/410") == [gone]
    assert receiver.ids("/redirect") == [moved]
    assert receiver.ids("/ok") == []  # the redirect was not followed
    dead = _dead_letters(rclient, keys)
    assert dead[gone]["reason"] == "final: HTTP 410"
    assert dead[gone]["status"] == "410" and dead[gone]["att"] == "1" and dead[gone]["task"] == "task-gone"
    assert dead[moved]["reason"] == "final: HTTP 302"
    assert rclient.xlen(keys.stream) == 0 and rclient.zcard(keys.delayed) == 0


def test_an_oversized_response_body_is_cut_off_not_read(make_settings, receiver, rclient, keys):
    settings = make_settings(CALLBACK_MAX_RESPONSE_BYTES="1024")
    callback_id = CallbackProducer(settings).enqueue(f"{receiver.url}/big", {"x": 1})

    run_burst(settings)

    assert receiver.ids("/big") == [callback_id]
    assert rclient.hget(keys.stats, "delivered") == "1"


def test_every_state_change_and_attempt_is_recorded_as_a_status_update(make_settings, receiver, rclient, keys):
    settings = make_settings(CALLBACK_RETRY_SCHEDULE="0.05")
    producer = CallbackProducer(settings)
    ok = producer.enqueue(f"{receiver.url}/flaky/1", {"x": 1}, task_id="t-1")
    dead = producer.enqueue(f"{receiver.url}/status/404", {"x": 2})

    run_burst(settings)

    updates = _status_updates(rclient, keys)
    states = {
        cid: [u["fields"]["status"] for u in updates if u["table"] == "callbacks" and u["key"] == cid]
        for cid in (ok, dead)
    }
    # "sending" is written only while an attempt is still in flight when outcomes are settled (see the next
    # test); an attempt that ends first makes it invisible in the database, so it is left out.
    assert [state for state in states[ok] if state != "sending"] == ["queued", "retrying", "delivered"]
    assert [state for state in states[dead] if state != "sending"] == ["queued", "dead"]
    attempts = [u for u in updates if u["table"] == "callback_attempts" and u["fields"]["callback_id"] == ok]
    assert [(a["key"], a["fields"]["status_code"], a["fields"]["outcome"]) for a in attempts] == [
        (f"{ok}:1", 500, "retrying"),
        (f"{ok}:2", 204, "delivered"),
    ]
    queued = next(u for u in updates if u["key"] == ok)
    assert queued["fields"]["task_id"] == "t-1" and queued["fields"]["url"].endswith("/flaky/1")


def test_an_attempt_in_flight_is_recorded_as_sending(make_settings, receiver, rclient, keys):
    settings = make_settings(CALLBACK_TIMEOUT="1", CALLBACK_MAX_ATTEMPTS="1")
    hanging = CallbackProducer(settings).enqueue(f"{receiver.url}/hang", {"x": 1})

    run_burst(settings)

    states = [u["fields"]["status"] for u in _status_updates(rclient, keys) if u["key"] == hanging]
    assert states == ["queued", "sending", "dead"]  # settled many times while it hung: "sending" was visible


def test_one_hanging_host_does_not_hold_up_the_others(make_settings, receiver):
    from testkit.receiver import Receiver

    other = Receiver().start()
    try:
        settings = make_settings(CALLBACK_HOST_CONCURRENCY="2", CALLBACK_MAX_ATTEMPTS="1")
        producer = CallbackProducer(settings)
        producer.enqueue_many([(f"{receiver.url}/hang", {"n": n}) for n in range(4)])
        fast = producer.enqueue_many([(f"{other.url}/ok", {"n": n}) for n in range(40)])

        seen_hanging_when_fast_done: list[int] = []

        def watch() -> None:
            if other.wait_for(len(fast), timeout=30):
                seen_hanging_when_fast_done.append(len(receiver.ids("/hang")))

        watcher = threading.Thread(target=watch)
        watcher.start()
        run_burst(settings)
        watcher.join()

        assert sorted(other.ids("/ok")) == sorted(fast)
        # The other host's 40 callbacks all arrived while the hanging host held its 2 slots.
        assert seen_hanging_when_fast_done == [2]
        assert len(receiver.ids("/hang")) == 4
    finally:
        other.stop()


def test_pacing_spreads_starts_evenly_at_the_global_rate(make_settings, receiver, rclient, keys):
    rate = 40
    settings = make_settings(CALLBACK_RATE=str(rate), CALLBACK_BATCH_SIZE="10", CALLBACK_MIN_INTERVAL="0.25")
    CallbackProducer(settings).enqueue_many([(f"{receiver.url}/ok", {"n": n}) for n in range(100)])

    run_burst(settings)

    starts = sorted(
        u["fields"]["started_at"] / 1000 for u in _status_updates(rclient, keys) if u["table"] == "callback_attempts"
    )
    assert len(starts) == 100
    busiest = max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)
    assert busiest <= rate + 1  # GCRA with no burst allowance: never more than the rate in any second
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0  # sanity
    assert sum(1 for g in gaps if g < 0.5 / rate) <= 5  # spread out, not sent in clumps


def _strand(rclient, keys, consumer: str, *, times_delivered: int) -> list[str]:
    """Read every entry as ``consumer`` and leave it pending, idle for a minute, read ``times_delivered`` times."""
    from worker.streams.keys import GROUP

    rclient.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    read = rclient.xreadgroup(GROUP, consumer, {keys.stream: ">"})
    ids = [sid for _, messages in read for sid, _ in messages]
    rclient.xclaim(keys.stream, GROUP, consumer, 0, ids, idle=60_000, retrycount=times_delivered)
    return ids


def test_entries_of_a_silent_consumer_are_reclaimed_and_delivered(make_settings, receiver, rclient, keys):
    settings = make_settings()
    ids = CallbackProducer(settings).enqueue_many([(f"{receiver.url}/ok", {"n": n}) for n in range(20)])
    _strand(rclient, keys, "crashed-leader", times_delivered=1)

    run_burst(settings)

    assert sorted(receiver.ids()) == sorted(ids)
    assert rclient.xpending(keys.stream, "deliverers")["pending"] == 0


def test_an_entry_read_too_often_without_settling_is_dead_lettered_as_poison(make_settings, receiver, rclient, keys):
    settings = make_settings(CALLBACK_MAX_DELIVERIES="3")
    poison = CallbackProducer(settings).enqueue(f"{receiver.url}/ok", {"crashes": "every leader"})
    _strand(rclient, keys, "crashed-leader", times_delivered=3)  # reclaiming makes it 4

    run_burst(settings)

    assert receiver.ids() == []
    dead = _dead_letters(rclient, keys)
    assert dead[poison]["reason"].startswith("poison: read 4 times without being settled")
    assert rclient.xpending(keys.stream, "deliverers")["pending"] == 0
