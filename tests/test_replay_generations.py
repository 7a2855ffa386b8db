"""Replaying a dead letter starts its callback's next generation: in Redis, in the database, in ``ops inspect``.

Real Redis, a real receiver, real burst leaders and a real status writer on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
import json

import pytest
from conftest import run_burst, settings_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_helpers import assert_rows_are, prefixed
from test_storage_merge import GENERATIONAL, one_by_one
from test_storage_writer import database_rows, make_writer

from ops import commands
from ops.__main__ import main
from ops.commands import ReplayFilter
from worker.producer import CallbackProducer
from worker.storage import merge
from worker.storage.apply import StatusStore
from worker.storage.engine import make_engine
from worker.streams import entry as entries
from worker.streams import status
from worker.streams.entry import CallbackEntry, Malformed

pytest_plugins = ("storage_fixtures",)  # fixtures: real databases

N = 20
_prefixes = itertools.count()


def write_statuses(client, url, keys) -> dict[str, dict[str, dict]]:
    """Run the status writer in burst mode until the status stream is empty; the rows it wrote."""
    assert make_writer(client, url, keys).run(burst=True) == "idle"
    return database_rows(url)


def replay_all(client, settings) -> int:
    return int(commands.replay(client, settings, ReplayFilter(), dry_run=False)["replayed"])


@pytest.fixture
def failing_twice(make_settings, receiver, client, keys):
    """N callbacks to ``/flaky/<fails>`` with 2 attempts each, run until dead-lettered: (settings, ids, fails)."""

    def run(fails: int):
        # Every callback of the one host fails on purpose: its circuit would open and hold them back (not
        # the subject here); adaptation is off, so each runs through its two attempts at once.
        settings = make_settings(CALLBACK_MAX_ATTEMPTS="2", CALLBACK_ADAPTIVE="0")
        ids = CallbackProducer(settings).enqueue_many(
            [(f"{receiver.url}/flaky/{fails}", {"n": n}, f"task-{n}") for n in range(N)]
        )
        run_burst(settings)
        assert client.xlen(keys.dead) == N
        return settings, ids

    return run


def test_a_replayed_dead_letter_is_delivered_and_its_rows_say_so(failing_twice, client, keys, db_url, receiver):
    settings, ids = failing_twice(2)
    before = write_statuses(client, db_url, keys)
    assert {(r["status"], r["attempts"], r["generation"]) for r in before["callbacks"].values()} == {("dead", 2, 0)}
    assert len(before["callback_attempts"]) == 2 * N

    assert replay_all(client, settings) == N
    (sighting,) = commands.inspect(client, settings, ids[0])
    assert sighting["place"] == "stream" and sighting["generation"] == 1
    assert sighting["fields"]["att"] == "0" and sighting["fields"]["gen"] == "1"
    (past,) = sighting["history"]
    assert past["generation"] == 0 and past["attempts"] == 2 and "500" in past["reason"] and past["status"] == "500"
    assert past["dead_age"] is not None and past["replayed_age"] is not None
    queued = write_statuses(client, db_url, keys)["callbacks"]  # the replay itself tells the database
    assert {(r["status"], r["attempts"], r["generation"], r["last_error"]) for r in queued.values()} == {
        ("queued", 0, 1, None)
    }
    assert {r["url"] for r in queued.values()} == {f"{receiver.url}/flaky/2"}

    run_burst(settings)
    after = write_statuses(client, db_url, keys)
    assert client.xlen(keys.dead) == 0 and client.xlen(keys.stream) == 0
    assert sorted(after["callbacks"]) == sorted(ids)
    for cid, row in after["callbacks"].items():
        assert (row["status"], row["attempts"], row["generation"]) == ("delivered", 1, 1), cid
        assert row["last_status_code"] == 204 and row["last_error"] is None and row["delivered_at"] is not None
        assert row["task_id"] == f"task-{ids.index(cid)}"
        assert row["created_at"] == before["callbacks"][cid]["created_at"]  # the same callback, not a new one
    attempts = after["callback_attempts"]
    assert len(attempts) == 3 * N
    for cid in ids:
        assert {attempts[f"{cid}:1"]["outcome"], attempts[f"{cid}:2"]["outcome"]} == {"retrying", "dead"}
        assert attempts[f"{cid}:2"] == before["callback_attempts"][f"{cid}:2"]  # not overwritten
        third = attempts[f"{cid}:g1:1"]
        assert (third["callback_id"], third["generation"], third["attempt"]) == (cid, 1, 1)
        assert (third["outcome"], third["status_code"]) == ("delivered", 204)
    assert sorted(receiver.ids()) == sorted(ids * 3)

    # A late update of generation 0 (a duplicate of the dead-lettering, a zombie's poison record) changes nothing.
    then = {cid: row["updated_at"] for cid, row in before["callbacks"].items()}  # when generation 0 ended
    late = [status.callback_sending(cid, 2, then[cid]) for cid in ids]
    late += [status.callback_poisoned(cid, "poison: read 9 times", then[cid]) for cid in ids]
    status.record_status(late, client, keys)
    assert write_statuses(client, db_url, keys) == after


def test_replaying_twice_gives_generation_two(failing_twice, client, keys, db_url, receiver):
    settings, ids = failing_twice(4)  # generations 0 and 1 fail twice each; generation 2 is delivered
    assert replay_all(client, settings) == N
    run_burst(settings)
    dead_again = write_statuses(client, db_url, keys)["callbacks"]
    assert {(r["status"], r["attempts"], r["generation"]) for r in dead_again.values()} == {("dead", 2, 1)}
    (letter,) = commands.inspect(client, settings, ids[0])
    assert letter["place"] == "dead" and letter["generation"] == 1 and "500" in letter["fields"]["reason"]
    assert [past["generation"] for past in letter["history"]] == [0]

    assert replay_all(client, settings) == N
    (sighting,) = commands.inspect(client, settings, ids[0])
    assert sighting["generation"] == 2 and [past["generation"] for past in sighting["history"]] == [0, 1]
    assert "generation 0 dead: " in sighting["fields"]["hist"]  # one readable line in `ops inspect`
    run_burst(settings)
    after = write_statuses(client, db_url, keys)
    assert {(r["status"], r["attempts"], r["generation"]) for r in after["callbacks"].values()} == {("delivered", 1, 2)}
    assert len(after["callback_attempts"]) == 5 * N
    assert {row["generation"] for row in after["callback_attempts"].values()} == {0, 1, 2}
    assert sorted(receiver.ids()) == sorted(ids * 5)


def test_ops_inspect_prints_the_history(failing_twice, client, redis_url, monkeypatch, capsys):
    settings, ids = failing_twice(2)
    assert replay_all(client, settings) == N
    for name, value in settings_env(settings.namespace, redis_url).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert main(["inspect", ids[0]]) == 0
    out = capsys.readouterr().out
    assert "gen: 1" in out and "generation 0 dead: " in out and "HTTP 500" in out
    assert main(["inspect", ids[0], "--json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown["generation"] == 1 and shown["history"][0]["attempts"] == 2


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=GENERATIONAL, batch=GENERATIONAL, cuts=st.lists(st.integers(0, 40), max_size=3))
def test_the_sql_applies_exactly_the_generation_rules(db_url, before, batch, cuts):
    prefix = f"g{next(_prefixes)}-"
    before, batch = ([prefixed(update, prefix) for update in updates] for updates in (before, batch))
    bounds = [0, *sorted(c for c in cuts if c <= len(batch)), len(batch)]
    engine = make_engine(db_url)
    store = StatusStore(engine)
    try:
        store.apply(merge.merge(before))  # rows of any generation, then batches of any other
        for a, b in itertools.pairwise(bounds):
            store.apply(merge.merge(batch[a:b]))
        want = one_by_one({}, [*before, *batch])
        assert_rows_are(engine, prefix, want)
    finally:
        store.close()
        engine.dispose()


# -- the entry codec: the generation and the history travel with the callback -------------------------------


def test_an_entry_without_a_generation_is_generation_zero_and_fields_stay_as_they_were():
    plain = CallbackEntry("msg_1", "https://example.com/", "{}", "t", 2, 1, 3)
    assert "gen" not in plain.fields() and "hist" not in plain.fields()  # entries of never-replayed callbacks
    decoded = entries.decode("1-0", plain.fields())
    assert isinstance(decoded, CallbackEntry) and decoded.generation == 0 and decoded.history is None


@pytest.mark.parametrize("gen", ["x", "-1", "", "1.5", "٣", "9" * 17])
def test_a_bad_generation_makes_the_entry_malformed_never_an_exception(gen):
    fields = {**CallbackEntry("msg_1", "https://example.com/", "{}").fields(), "gen": gen}
    decoded = entries.decode("1-0", fields)
    assert isinstance(decoded, Malformed) and "'gen'" in decoded.reason


def test_a_replay_keeps_the_dead_letter_record_and_everything_else_travels():
    letter = CallbackEntry("msg_1", "https://example.com/", '{"a":1}', "t", 2, 10, 20, stream_id="5-0")
    dead = {"reason": "final: HTTP 500", "status": "500", "error": "busy " + "x" * 1000, "dead_ms": "30"}
    once = entries.replay_of(letter, dead, 40)
    assert (once.attempts, once.generation, once.enqueued_ms, once.first_enqueued_ms) == (0, 1, 40, 10)
    assert (once.callback_id, once.url, once.body, once.task_id) == ("msg_1", "https://example.com/", '{"a":1}', "t")
    assert once.stream_id is None  # a new stream entry will carry it
    (record,) = entries.past_generations(once.history)
    assert record == {
        "gen": 0,
        "att": 2,
        "reason": "final: HTTP 500",
        "status": "500",
        "error": dead["error"][: entries.HISTORY_TEXT_CHARS],
        "dead_ms": "30",
        "replayed_ms": 40,
    }
    assert once.history is not None and once.history.isascii()
    again = entries.decode("6-0", {**once.next_attempt().fields(), **dead})  # as the dead letters hold it
    assert isinstance(again, CallbackEntry) and again.generation == 1 and again.history == once.history
    assert again.member() != letter.member()
    many = once
    for n in range(entries.MAX_HISTORY + 3):
        many = entries.replay_of(many, {"reason": f"r{n}"}, 50 + n)
    kept = entries.past_generations(many.history)
    assert len(kept) == entries.MAX_HISTORY and kept[-1]["gen"] == entries.MAX_HISTORY + 3
    assert many.generation == entries.MAX_HISTORY + 4


def test_a_hostile_history_is_shown_printable_and_capped():
    history = json.dumps([{"gen": 0, "reason": "a\x00\ud800" + "y" * 5000, "att": True, "x": [1]}, 7])
    (record,) = entries.past_generations(history)
    assert record == {"gen": 0, "reason": ("a\ufffd?" + "y" * 5000)[: entries.HISTORY_TEXT_CHARS]}
    assert entries.replay_of(CallbackEntry("m", "https://example.com/", "{}"), {"error": "\ud800"}, 1).history


@pytest.mark.parametrize("history", ["not json", "[" * 100_000, '{"a": 1}', "[1, 2]", "", None])
def test_an_unreadable_history_is_no_history(history):
    assert entries.past_generations(history) == []
    letter = CallbackEntry("msg_1", "https://example.com/", "{}", history=history, generation=3)
    (record,) = entries.past_generations(entries.replay_of(letter, {}, 1).history)
    assert record["gen"] == 3 and record["reason"] == ""


def test_a_malformed_dead_letter_goes_back_as_it_was(client, keys, make_settings):
    settings = make_settings()
    client.xadd(keys.dead, {"raw.url": "x", "reason": "malformed: no 'cid' field", "dead_ms": "1"})
    assert replay_all(client, settings) == 1
    ((_, fields),) = client.xrange(keys.stream)
    assert fields[b"raw.url"] == b"x" and fields[b"att"] == b"0" and b"reason" not in fields
    assert client.xlen(keys.status_updates) == 0  # no callback, no row to tell
