"""Immediate delivery against the real local receiver; its status updates through the real writer."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket

import pytest
from conftest import SECRET, free_port
from standardwebhooks.webhooks import Webhook
from test_storage_writer import database_rows, make_writer

from worker.delivery.targets import forbidden_reason
from worker.engine.immediate import deliver_now
from worker.errors import InvalidCallbackURL, InvalidPayload
from worker.storage.apply import StatusStore
from worker.storage.engine import make_engine
from worker.streams.client import sync_client

pytest_plugins = ("storage_fixtures",)  # fixtures: real databases, servers of our own


def write_statuses(client, url, keys) -> dict:
    writer = make_writer(client, url, keys)
    assert writer.run(burst=True) == "idle"
    writer.store.close()
    return database_rows(url)


def test_delivers_a_signed_callback_and_records_it(make_settings, receiver, client, keys, sqlite_url):
    settings = make_settings()
    payload = {"task_id": "t1", "status": "success"}
    result = deliver_now(settings, f"{receiver.url}/ok", payload, client=client, task_id="t1")
    assert (result.state, result.attempts, result.status_code, result.recorded) == ("delivered", 1, 204, "stream")
    (arrival,) = receiver.snapshot()
    assert arrival.webhook_id == result.callback_id
    assert Webhook(SECRET).verify(arrival.body, arrival.headers) == payload
    rows = write_statuses(client, sqlite_url, keys)
    callback = rows["callbacks"][result.callback_id]
    assert (callback["status"], callback["attempts"], callback["task_id"]) == ("delivered", 1, "t1")
    assert callback["delivered_at"] is not None and callback["last_error"] is None
    attempt = rows["callback_attempts"][f"{result.callback_id}:1"]
    assert (attempt["status_code"], attempt["outcome"]) == (204, "delivered")


def test_retries_inline_by_the_policy_then_dead_letters(make_settings, receiver, client, keys, sqlite_url):
    settings = make_settings()  # retry schedule 0.05, 0.1 -> at most 3 attempts
    result = deliver_now(settings, f"{receiver.url}/status/503", {"n": 1}, client=client, attempts=5)
    assert (result.state, result.attempts, result.status_code) == ("dead", 3, 503)
    assert "exhausted" in (result.error or "")
    assert receiver.ids() == [result.callback_id] * 3  # same webhook-id on every attempt
    callback = write_statuses(client, sqlite_url, keys)["callbacks"][result.callback_id]
    assert (callback["status"], callback["attempts"], callback["last_status_code"]) == ("dead", 3, 503)


def test_stops_early_with_retrying_when_the_next_attempt_is_not_due_soon(make_settings, receiver, client, keys):
    settings = make_settings()
    result = deliver_now(settings, f"{receiver.url}/flaky/1", {}, client=client, attempts=3, max_wait=0.0)
    assert (result.state, result.attempts, result.status_code) == ("retrying", 1, 500)
    assert result.retry_in is not None and result.retry_in > 0
    flaky = deliver_now(settings, f"{receiver.url}/flaky/1", {}, client=client, attempts=3)
    assert (flaky.state, flaky.attempts) == ("delivered", 2)


def test_final_statuses_and_the_ssrf_guard_are_the_leaders(make_settings, receiver, client):
    settings = make_settings()
    assert deliver_now(settings, f"{receiver.url}/status/410", {}, client=client, attempts=3).attempts == 1
    redirect = deliver_now(settings, f"{receiver.url}/redirect", {}, client=client)
    assert (redirect.state, redirect.status_code) == ("dead", 302)  # redirects are not followed

    guarded = make_settings(CALLBACK_ALLOW_PRIVATE="0")
    with pytest.raises(InvalidCallbackURL):  # a literal private address is refused before anything happens
        deliver_now(guarded, f"{receiver.url}/ok", {}, client=client)
    name = socket.gethostname()  # a name (not "localhost") that resolves to a private address here
    if forbidden_reason(ipaddress.ip_address(socket.gethostbyname(name))) is None:
        pytest.skip(f"{name} resolves to a public address on this machine")
    by_name = deliver_now(guarded, f"http://{name}:{receiver.port}/ok", {}, client=client, attempts=3)
    assert (by_name.state, by_name.attempts, by_name.status_code) == ("dead", 1, None)  # resolved, then refused
    assert "blocked" in (by_name.error or "")
    assert all(arrival.path != "/ok" for arrival in receiver.snapshot())


def test_bad_input_raises_and_records_nothing(make_settings, receiver, client, keys):
    settings = make_settings()
    with pytest.raises(InvalidPayload):
        deliver_now(settings, f"{receiver.url}/ok", {"x": object()}, client=client)
    with pytest.raises(InvalidCallbackURL):
        deliver_now(settings, "ftp://example.com/hook", {}, client=client)
    assert receiver.snapshot() == [] and client.xlen(keys.status_updates) == 0


def test_with_redis_down_too_the_status_goes_straight_to_the_database(make_settings, receiver, sqlite_url):
    settings = make_settings()
    dead_redis = sync_client(f"redis://127.0.0.1:{free_port()}/0", retries=0)  # nothing listens there
    store = StatusStore(make_engine(sqlite_url))
    result = deliver_now(settings, f"{receiver.url}/ok", {"n": 1}, client=dead_redis, store=store)
    store.close()
    assert (result.state, result.recorded) == ("delivered", "database")
    callback = database_rows(sqlite_url)["callbacks"][result.callback_id]
    assert (callback["status"], callback["attempts"]) == ("delivered", 1)
    lost = deliver_now(settings, f"{receiver.url}/ok", {"n": 2}, client=dead_redis)
    assert (lost.state, lost.recorded) == ("delivered", "nowhere")  # delivered all the same


def test_works_from_inside_a_running_event_loop(make_settings, receiver, client):
    settings = make_settings()

    async def caller() -> str:
        return deliver_now(settings, f"{receiver.url}/ok", [1, 2], client=client).state

    assert asyncio.run(caller()) == "delivered"
    assert json.loads(receiver.snapshot()[0].body) == [1, 2]
