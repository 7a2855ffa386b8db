"""End-to-end delivery through a real leader, real Redis and a real local receiver."""

from __future__ import annotations

import json

from conftest import SECRET, run_burst
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
