"""Standard Webhooks ``v1a`` (Ed25519) signatures beside ``v1``: keys, headers, and every delivery verified."""

from __future__ import annotations

import base64
import time

import pytest
from conftest import SECRET, run_burst
from standardwebhooks.webhooks import Webhook

from ops.__main__ import main as ops_main
from testkit.ed25519 import verifies
from worker.config.parsers import ed25519_seed
from worker.delivery import ed25519
from worker.delivery.signing import SigningKeys
from worker.errors import SettingsError
from worker.producer import CallbackProducer

KEY, PUBLIC = ed25519.generate()


def test_a_generated_pair_signs_and_verifies():
    key = ed25519.private_key(KEY)
    assert ed25519.public_key(key) == PUBLIC
    header = ed25519.signature(key, "msg_1", 1700000000, b"{}")
    assert verifies(PUBLIC, "msg_1", 1700000000, b"{}", header)
    assert not verifies(PUBLIC, "msg_1", 1700000001, b"{}", header)  # another timestamp
    assert not verifies(PUBLIC, "msg_2", 1700000000, b"{}", header)  # another id
    assert not verifies(ed25519.generate()[1], "msg_1", 1700000000, b"{}", header)  # another key


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("whsec_" + base64.b64encode(b"x" * 32).decode(), "must start with 'whsk_'"),
        ("whsk_!!!", "not valid base64"),
        ("whsk_" + base64.b64encode(b"short").decode(), "32 bytes"),
    ],
)
def test_a_malformed_secret_key_is_refused_without_echoing_it(make_settings, secret, why):
    with pytest.raises(ValueError, match=why):
        ed25519_seed(secret)
    with pytest.raises(SettingsError) as caught:
        make_settings(CALLBACK_SIGNING_KEY=secret)
    assert secret not in str(caught.value) and "<redacted>" in str(caught.value)


def test_both_signatures_go_in_one_header_and_each_verifier_accepts_its_own():
    keys = SigningKeys(SECRET, (), KEY)
    timestamp, body = int(time.time()), b'{"ok":true}'
    headers = keys.headers("https://a.example/hook", "msg_1", timestamp, body)
    versions = [part.partition(",")[0] for part in headers["webhook-signature"].split()]
    assert versions == ["v1", "v1a"]
    assert Webhook(SECRET).verify(body, headers) == {"ok": True}  # the public v1 verifier ignores v1a
    assert verifies(PUBLIC, "msg_1", timestamp, body, headers["webhook-signature"])
    alone = SigningKeys(SECRET).headers("https://a.example/hook", "msg_1", timestamp, body)
    assert [p.partition(",")[0] for p in alone["webhook-signature"].split()] == ["v1"]


def test_every_delivery_verifies_with_the_public_key(make_settings, receiver):
    settings = make_settings(CALLBACK_SIGNING_KEY=KEY)
    producer = CallbackProducer(settings)
    ids = producer.enqueue_many([(f"{receiver.url}/ok", {"n": n}) for n in range(50)])
    producer.close()
    run_burst(settings)
    arrivals = receiver.snapshot()
    assert sorted(a.webhook_id for a in arrivals) == sorted(ids)
    for arrival in arrivals:
        signature = arrival.headers["webhook-signature"]
        timestamp = int(arrival.headers["webhook-timestamp"])
        assert arrival.verified  # v1, by the standardwebhooks library
        assert verifies(PUBLIC, arrival.webhook_id, timestamp, arrival.body, signature)


def test_ops_keys_generate_prints_a_pair_that_works(capsys):
    assert ops_main(["keys", "generate"]) == 0
    out = capsys.readouterr().out.splitlines()
    secret = out[0].removeprefix("CALLBACK_SIGNING_KEY=")
    public = out[1].rsplit(" ", 1)[1]
    key = ed25519.private_key(secret)
    assert ed25519.public_key(key) == public
    assert verifies(public, "msg_x", 1, b"{}", ed25519.signature(key, "msg_x", 1, b"{}"))
