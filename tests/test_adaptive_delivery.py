"""Adaptive delivery with real worker processes: a rate-limited receiver, a receiver that is down for a while."""

from __future__ import annotations

import time

import pytest
from conftest import SECRET, wait_until

from testkit.receiver import Receiver
from worker.producer import CallbackProducer
from worker.streams.keys import Keys

pytestmark = pytest.mark.slow

# Retries far enough apart that no callback runs out of attempts while its host makes it wait.
PATIENT = {"CALLBACK_RETRY_SCHEDULE": "1,2,4,8,16", "CALLBACK_MAX_ATTEMPTS": 12, "CALLBACK_CLAIM_IDLE": 30}


@pytest.fixture
def healthy():
    server = Receiver(SECRET).start()
    yield server
    server.stop()


def test_a_rate_limited_receiver_is_paced_to_what_it_accepts_while_another_host_goes_at_full_speed(
    start_worker, make_settings, receiver, healthy
):
    limit, watch = 50, 20.0
    start_worker(threads=3, **PATIENT)
    producer = CallbackProducer(make_settings(**PATIENT))
    started = time.time()
    producer.enqueue_many([(f"{receiver.url}/limit/{limit}", {"n": n}) for n in range(int(limit * watch * 1.2))])
    producer.enqueue_many([(f"{healthy.url}/ok", {"n": n}) for n in range(400)])
    assert healthy.wait_for(400, timeout=15)  # the limited host's refusals hold up no one else
    healthy_done = max(a.at for a in healthy.snapshot()) - started
    time.sleep(max(0.0, started + watch - time.time()))
    answers = [(at, status) for at, path, status in receiver.answers if started + 5 <= at < started + watch]
    refused = sum(1 for _, status in answers if status == 429)
    accepted = sum(1 for _, status in answers if status == 204)
    assert answers, "the limited receiver heard nothing after the first 5 s"
    assert refused / len(answers) <= 0.10, (refused, accepted)
    per_second = __import__("collections").Counter((int(at - started), status) for at, _, status in receiver.answers)
    assert accepted / (watch - 5) >= 0.8 * limit, (refused, accepted, sorted(per_second.items()))
    assert healthy_done < 10, healthy_done


def test_a_host_that_is_down_gets_one_probe_per_interval_and_everything_once_it_is_back(
    start_worker, make_settings, receiver, healthy, rclient
):
    outage, probe = 10, 1.5
    env = {**PATIENT, "CALLBACK_CIRCUIT_PROBE": probe}
    start_worker(threads=3, **env)
    producer = CallbackProducer(make_settings(**env))
    started = time.time()
    down = producer.enqueue_many([(f"{receiver.url}/outage/{outage}", {"n": n}) for n in range(60)])
    up = producer.enqueue_many([(f"{healthy.url}/ok", {"n": n}) for n in range(300)])
    assert healthy.wait_for(300, timeout=15)
    assert receiver.wait_for(60, timeout=outage + 45), len(set(receiver.ids()))
    assert sorted(set(receiver.ids())) == sorted(down) and len(set(healthy.ids())) == len(up)
    refusals = sorted(at for at, _, status in receiver.answers if status == 503)
    assert len(refusals) >= 20  # enough evidence to open the circuit
    # Once the circuit opened (the 20th failure at the latest, plus what was already in flight),
    # the host hears one probe per interval at most until it is back.
    opened = refusals[19] + 1.0
    during = [at for at in refusals if at > opened]
    assert len(during) <= (started + outage - opened) / probe + 2, (len(during), len(refusals))
    keys = Keys(make_settings().namespace)
    assert rclient.xlen(keys.dead) == 0  # held back is not dead
    assert wait_until(lambda: rclient.xlen(keys.stream) == 0, 10)
