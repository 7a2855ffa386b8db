"""Standard Webhooks signatures, checked with the public ``standardwebhooks`` verifier."""

from __future__ import annotations

import base64
import json
import time

import pytest
from conftest import SECRET
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from worker.config.parsers import signing_key
from worker.config.settings import Settings
from worker.delivery.signing import SigningKeys, headers, signature

A_SECRET = "whsec_" + base64.b64encode(b"a" * 32).decode()
B_SECRET = "whsec_" + base64.b64encode(b"b" * 32).decode()
C_SECRET = "whsec_" + base64.b64encode(b"c" * 24).decode()


def test_the_published_test_vector():
    # The example from the Standard Webhooks / Svix documentation.
    assert (
        signature(signing_key(SECRET), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


BODIES = [
    b"{}",
    b'{"task_id":"t1","status":"success"}',
    json.dumps({"name": "caf\u00e9 \u2713 \U0001f600", "n": [1, 2.5, None, True]}, ensure_ascii=False).encode(),
    json.dumps({"image": "A" * 200_000}).encode(),
]


@pytest.mark.parametrize("body", BODIES, ids=["empty", "small", "unicode", "large"])
def test_the_public_verifier_accepts_the_headers(body):
    sent = headers(signing_key(SECRET), "msg_0123456789abcdef", int(time.time()), body)
    assert sent["content-type"] == "application/json"
    assert sent["webhook-id"] == "msg_0123456789abcdef"
    assert sent["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(body, sent) == json.loads(body)
    assert Webhook(SECRET).verify(body.decode(), sent) == json.loads(body)


def _tampered_body(body: bytes, sent: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body + b" ", sent


def _changed_byte(body: bytes, sent: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body.replace(b"success", b"failed!"), sent


def _other_id(body: bytes, sent: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {**sent, "webhook-id": "msg_other"}


def _other_timestamp(body: bytes, sent: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {**sent, "webhook-timestamp": str(int(sent["webhook-timestamp"]) + 1)}


def _no_signature(body: bytes, sent: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body, {key: value for key, value in sent.items() if key != "webhook-signature"}


@pytest.mark.parametrize("tamper", [_tampered_body, _changed_byte, _other_id, _other_timestamp, _no_signature])
def test_tampering_fails_verification(tamper):
    body = b'{"task_id":"t1","status":"success"}'
    sent = headers(signing_key(SECRET), "msg_1", int(time.time()), body)
    tampered_body, tampered_headers = tamper(body, sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered_body, tampered_headers)


def test_another_secret_fails_verification():
    body = b'{"a":1}'
    sent = headers(signing_key(SECRET), "msg_1", int(time.time()), body)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(A_SECRET).verify(body, sent)


def test_the_signature_is_stable_for_an_id_and_timestamp_and_changes_with_either():
    key, body = signing_key(SECRET), b"{}"
    assert signature(key, "msg_1", 1700000000, body) == signature(key, "msg_1", 1700000000, body)
    assert signature(key, "msg_1", 1700000000, body) != signature(key, "msg_1", 1700000001, body)
    assert signature(key, "msg_1", 1700000000, body) != signature(key, "msg_2", 1700000000, body)


# Prefixes deliberately listed shortest first: the longest matching prefix must still win.
PREFIXES = [
    ("https://a.example/", A_SECRET),
    ("https://a.example/hooks/", B_SECRET),
    ("https://a.example/hooks/special/", C_SECRET),
]

# (callback URL, the secret its signature must verify with)
KEY_CHOICE: list[tuple[str, str]] = [
    ("https://a.example/other", A_SECRET),
    ("https://a.example/", A_SECRET),
    ("https://a.example/hooks/", B_SECRET),
    ("https://a.example/hooks/x?y=1", B_SECRET),
    ("https://a.example/hooks/special/1", C_SECRET),
    ("https://a.example/hooks/specia", B_SECRET),
    ("https://a.example.evil/", SECRET),  # a prefix ending in / does not match a longer host
    ("http://a.example/hooks/", SECRET),  # another scheme is another prefix
    ("https://b.example/hooks/", SECRET),
    ("https://a.example:443/hooks/x", B_SECRET),  # the default port spelt out is the same origin
    ("https://A.Example/hooks/x", B_SECRET),  # host names are case-insensitive
]

# A prefix without a trailing slash: same origin and a path prefix at a "/" boundary, nothing else.
ORIGIN_PREFIXES = [("https://customer.example", A_SECRET), ("https://customer.example/customer", B_SECRET)]
ORIGIN_CHOICE: list[tuple[str, str]] = [
    ("https://customer.example/", A_SECRET),
    ("https://customer.example/other", A_SECRET),
    ("https://customer.example/customer", B_SECRET),
    ("https://customer.example/customer/1?x=y", B_SECRET),
    ("https://customer.example/customerX", A_SECRET),  # not under /customer: the origin's key
    ("https://customer.example.attacker.net/steal", SECRET),  # another host: never the customer's key
    ("https://customer.example:9999/", SECRET),  # another port is another origin
    ("http://customer.example/", SECRET),  # another scheme too
    ("https://user@customer.example.attacker.net/", SECRET),
]


@pytest.mark.parametrize(("url", "secret"), ORIGIN_CHOICE)
def test_a_prefix_covers_its_own_origin_only(url, secret):
    assert SigningKeys(SECRET, ORIGIN_PREFIXES).for_url(url) == signing_key(secret)


@pytest.mark.parametrize(("url", "secret"), KEY_CHOICE)
def test_the_longest_matching_prefix_chooses_the_key(url, secret):
    keys = SigningKeys(SECRET, PREFIXES)
    body = b'{"ok":true}'
    sent = headers(keys.for_url(url), "msg_1", int(time.time()), body)
    assert Webhook(secret).verify(body, sent) == {"ok": True}
    for other in {SECRET, A_SECRET, B_SECRET, C_SECRET} - {secret}:
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(body, sent)


def test_keys_by_prefix_from_the_settings():
    mapping = {prefix: secret for prefix, secret in reversed(PREFIXES)}
    settings = Settings.from_env({"CALLBACK_SIGNING_SECRET": SECRET, "CALLBACK_SIGNING_SECRETS": json.dumps(mapping)})
    keys = SigningKeys(settings.signing_secret, settings.signing_secrets)
    for url, secret in KEY_CHOICE:
        assert keys.for_url(url) == signing_key(secret)


@pytest.mark.parametrize("bad", ["garbage", "whsec_!!!", "whsec_" + base64.b64encode(b"short").decode()])
def test_signing_keys_refuse_a_malformed_secret(bad):
    with pytest.raises(ValueError):
        SigningKeys(bad)
    with pytest.raises(ValueError):
        SigningKeys(SECRET, [("https://a.example/", bad)])


def test_remembered_choices_stay_right_past_the_bound(monkeypatch):
    # The key chosen per URL is remembered (one parse per URL, not per attempt), in bounded memory.
    monkeypatch.setattr("worker.delivery.signing.CHOSEN_URLS", 3)
    keys = SigningKeys(SECRET, ORIGIN_PREFIXES)
    for _ in range(3):  # more URLs than the bound, asked again and again: every answer as if asked once
        for url, secret in ORIGIN_CHOICE:
            assert keys.for_url(url) == signing_key(secret)
