"""Coalescing is pure: a batch merged into one change per row gives what the updates give one by one."""

from __future__ import annotations

import itertools
from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from storage_helpers import updates

from worker.storage import merge
from worker.storage.entries import decode_entry
from worker.storage.merge import RowChange
from worker.streams import status
from worker.streams.status import StatusUpdate

SEQUENCES = st.lists(updates(), max_size=40)


def one_by_one(start: dict[tuple[str, str], dict], sequence: list[StatusUpdate]) -> dict[tuple[str, str], dict]:
    """The reference: fold each update into its row, in order."""
    rows = dict(start)
    for update in sequence:
        rows[(update.table, update.key)] = merge.fold(rows.get((update.table, update.key)), update)
    return rows


def merged(start: dict[tuple[str, str], dict], changes: list[RowChange]) -> dict[tuple[str, str], dict]:
    rows = dict(start)
    for change in changes:
        rows[(change.table, change.key)] = merge.apply(rows.get((change.table, change.key)), change)
    return rows


@settings(max_examples=400, deadline=None)
@given(before=SEQUENCES, batch=SEQUENCES)
def test_a_merged_batch_ends_in_the_rows_that_one_by_one_gives(before, batch):
    start = one_by_one({}, before)  # any reachable rows, or none
    changes = merge.merge(batch)
    assert len({(c.table, c.key) for c in changes}) == len(changes)
    assert merged(start, changes) == one_by_one(start, batch)


@settings(max_examples=200, deadline=None)
@given(before=SEQUENCES, batch=SEQUENCES, cuts=st.lists(st.integers(0, 40), max_size=4))
def test_replaying_a_batch_changes_nothing_and_any_split_into_flushes_agrees(before, batch, cuts):
    start = one_by_one({}, before)
    once = merged(start, merge.merge(batch))
    assert merged(once, merge.merge(batch)) == once  # a crash between commit and ack re-applies: no-op
    bounds = [0, *sorted(c for c in cuts if c <= len(batch)), len(batch)]
    flushes = [batch[a:b] for a, b in itertools.pairwise(bounds)]
    assert reduce(lambda rows, part: merged(rows, merge.merge(part)), flushes, start) == once


def _lifecycle(cid: str) -> list[StatusUpdate]:
    t = 1_700_000_000_000
    return [
        status.callback_queued(cid, "https://example.com/hook", "task-1", t),
        status.callback_sending(cid, 1, t + 10),
        *status.callback_attempted(
            cid,
            attempt=1,
            state="retrying",
            status_code=503,
            error="HTTP 503: busy",
            started_at=t + 10,
            duration_ms=12.5,
            outcome="retrying",
            next_attempt_at=t + 5000,
            at=t + 30,
        ),
        status.callback_sending(cid, 2, t + 5000),
        *status.callback_attempted(
            cid,
            attempt=2,
            state="delivered",
            status_code=204,
            error=None,
            started_at=t + 5000,
            duration_ms=3.0,
            outcome="delivered",
            next_attempt_at=None,
            at=t + 5020,
        ),
    ]


def test_a_delivered_callback_keeps_the_outcome_that_delivered_it():
    updates_ = _lifecycle("msg_1")
    row = one_by_one({}, updates_)[("callbacks", "msg_1")]
    assert row["status"] == "delivered"
    assert row["attempts"] == 2
    assert row["last_status_code"] == 204
    assert row["last_error"] is None  # an explicit null clears the earlier error
    assert row["next_attempt_at"] is None
    assert row["created_at"] == 1_700_000_000_000
    assert row["updated_at"] == 1_700_000_005_020
    late = [status.callback_sending("msg_1", 1, 1_700_000_009_000), *updates_[:4]]  # duplicates arrive late
    again = one_by_one({("callbacks", "msg_1"): row}, late)[("callbacks", "msg_1")]
    assert again["status"] == "delivered"
    assert again["last_status_code"] == 204
    assert again["attempts"] == 2
    assert again["created_at"] == 1_700_000_000_000
    assert again["updated_at"] == 1_700_000_009_000


def test_attempt_rows_take_their_callback_and_number_from_the_key():
    (change,) = merge.merge([StatusUpdate("callback_attempts", "msg_x:3", 5, {"outcome": "retrying"})])
    row = merge.apply(None, change)
    assert row["callback_id"] == "msg_x"
    assert row["attempt"] == 3
    assert row["created_at"] == row["updated_at"] == 5


@pytest.mark.parametrize(
    ("update", "message"),
    [
        (StatusUpdate("callbacks", "m", 1, {"status": "lost"}), "not one of"),
        (StatusUpdate("callbacks", "m", 1, {"attempts": -1}), "out of range"),
        (StatusUpdate("callbacks", "m", 1, {"attempts": "2"}), "must be an integer"),
        (StatusUpdate("callbacks", "m", 1, {"attempts": True}), "must be an integer"),
        (StatusUpdate("callbacks", "m", 1, {"attempts": 2**31}), "out of range"),
        (StatusUpdate("callbacks", "m", 1, {"colour": "red"}), "no column"),
        (StatusUpdate("callbacks", "m", 1, {"status": None}), "may not be null"),
        (StatusUpdate("callbacks", "m", 1, {"last_error": "a\x00b"}), "NUL"),
        (StatusUpdate("callbacks", "m", 1, {"last_error": "\ud800"}), "Unicode"),
        (StatusUpdate("callbacks", "m", 1, {"id": "other"}), "contradicts"),
        (StatusUpdate("callbacks", "", 1, {}), "empty"),
        (StatusUpdate("callbacks", "m" * 65, 1, {}), "too long"),
        (StatusUpdate("callbacks", "m", -5, {}), "epoch milliseconds"),
        (StatusUpdate("callbacks", "m", 1, {"next_attempt_at": 10**20}), "out of range"),
        (StatusUpdate("callback_attempts", "no-number", 1, {}), "<callback id>:<attempt number>"),
        (StatusUpdate("callback_attempts", "m:1", 1, {"attempt": 2}), "contradicts"),
        (StatusUpdate("callback_attempts", "m:1", 1, {"duration_ms": float("inf")}), "finite"),
        (StatusUpdate("image_edit_tasks", "t", 1, {"timings": {"a": "\x00"}}), "NUL"),
        (StatusUpdate("image_edit_tasks", "t", 1, {"status": "done"}), "not one of"),
        (StatusUpdate("nope", "t", 1, {}), "unknown status table"),
    ],
)
def test_check_refuses_what_the_database_would(update, message):
    with pytest.raises(ValueError, match=message):
        merge.check(update)


def test_an_entry_keeps_its_good_updates_and_sets_aside_the_bad():
    good = status.callback_queued("msg_1", "https://example.com/", None, 1)
    raw = status.encode([good, StatusUpdate("callbacks", "msg_2", 1, {"attempts": "x"})])[:-1] + ',{"table":"x"},7]'
    entry = decode_entry("1-0", {b"u": raw.encode()})
    assert entry.updates == [good]
    assert len(entry.rejected) == 3
    assert entry.bad_record()["id"] == "1-0"
    assert decode_entry("2-0", {b"u": b"not json"}).bad_record()["u"] == "not json"
    assert decode_entry("3-0", {b"x": b"1"}).rejected[0][1] == "entry has no 'u' field"


# -- generations: a replayed callback starts over; terminal states stick within a generation only --------


@st.composite
def generational_updates(draw: st.DrawFn) -> StatusUpdate:
    """:func:`storage_helpers.updates` with small generations, so that rows meet equal, older and newer ones."""
    update = draw(updates())
    fields = dict(update.fields)
    if update.table == "callbacks":
        choice = draw(st.sampled_from(["absent", "small", "as drawn"]))
        if choice == "absent":
            fields.pop("generation", None)
        elif choice == "small":
            fields["generation"] = draw(st.integers(0, 3))
    elif update.table == "callback_attempts" and draw(st.booleans()):
        generation = draw(st.integers(1, 2))
        cid, _, number = update.key.rpartition(":")
        if "generation" in fields:
            fields["generation"] = generation
        return StatusUpdate(update.table, status.attempt_key(cid, generation, int(number)), update.at, fields)
    return StatusUpdate(update.table, update.key, update.at, fields)


GENERATIONAL = st.lists(generational_updates(), max_size=40)


@settings(max_examples=400, deadline=None)
@given(before=GENERATIONAL, batch=GENERATIONAL, cuts=st.lists(st.integers(0, 40), max_size=4))
def test_generations_merge_exactly_as_one_by_one_in_any_split(before, batch, cuts):
    start = one_by_one({}, before)
    once = merged(start, merge.merge(batch))
    assert once == one_by_one(start, batch)
    assert merged(once, merge.merge(batch)) == once
    bounds = [0, *sorted(c for c in cuts if c <= len(batch)), len(batch)]
    flushes = [batch[a:b] for a, b in itertools.pairwise(bounds)]
    assert reduce(lambda rows, part: merged(rows, merge.merge(part)), flushes, start) == once


T = 1_700_000_000_000
DEAD_GEN0 = {
    "task_id": "task-1",
    "url": "https://example.com/hook",
    "status": "dead",
    "attempts": 2,
    "last_status_code": 500,
    "last_error": "HTTP 500",
    "next_attempt_at": None,
    "delivered_at": None,
    "created_at": T,
    "updated_at": T + 100,
    "generation": 0,
}
DELIVERED_GEN1 = {
    **DEAD_GEN0,
    "status": "delivered",
    "attempts": 1,
    "last_status_code": 204,
    "last_error": None,
    "delivered_at": T + 900,
    "updated_at": T + 900,
    "generation": 1,
}
ATTEMPT_2_DEAD = status.callback_attempted(
    "msg_1",
    attempt=2,
    state="dead",
    status_code=500,
    error="HTTP 500",
    started_at=T + 90,
    duration_ms=1.0,
    outcome="dead",
    next_attempt_at=None,
    at=T + 100,
)[0]


@pytest.mark.parametrize(
    ("row", "update", "changed"),
    [
        pytest.param(  # the replay's queued update starts the row over: no longer dead, no earlier outcome
            DEAD_GEN0,
            status.callback_queued("msg_1", "https://example.com/hook", "task-1", T + 500, generation=1),
            {
                "status": "queued",
                "attempts": 0,
                "last_status_code": None,
                "last_error": None,
                "generation": 1,
                "updated_at": T + 500,
            },
            id="newer generation starts over",
        ),
        pytest.param(  # even without the queued update, the first attempt of the new generation starts it over
            DEAD_GEN0,
            status.callback_sending("msg_1", 1, T + 600, generation=2),
            {
                "status": "sending",
                "attempts": 1,
                "last_status_code": None,
                "last_error": None,
                "generation": 2,
                "updated_at": T + 600,
            },
            id="first attempt of a newer generation",
        ),
        pytest.param(DELIVERED_GEN1, ATTEMPT_2_DEAD, {}, id="late update of generation 0 changes nothing"),
        pytest.param(
            DELIVERED_GEN1,
            status.callback_poisoned("msg_1", "poison", T + 5000),
            {"updated_at": T + 5000},  # what belongs to every generation still merges: the time of the last write
            id="older generation with a later time: only updated_at",
        ),
        pytest.param(
            DELIVERED_GEN1,
            status.callback_sending("msg_1", 3, T + 5000, generation=1),
            {"attempts": 3, "updated_at": T + 5000},  # the counter still rises; the status stays
            id="terminal sticks within its generation",
        ),
        pytest.param(
            {**DELIVERED_GEN1, "status": "sending", "attempts": 2},
            status.callback_sending("msg_1", 1, T + 100, generation=1),
            {},
            id="counters never decrease within a generation",
        ),
        pytest.param(
            DELIVERED_GEN1,
            StatusUpdate("callbacks", "msg_1", T + 50, {"status": "dead", "last_error": "x"}),
            {},
            id="an update without a generation is generation 0",
        ),
        pytest.param(
            None,
            status.callback_sending("msg_1", 1, T, generation=1),
            {
                "status": "sending",
                "attempts": 1,
                "generation": 1,
                "created_at": T,
                "updated_at": T,
                "task_id": None,
                "url": None,
                "last_status_code": None,
                "last_error": None,
                "next_attempt_at": None,
                "delivered_at": None,
            },
            id="a row first seen in a later generation",
        ),
    ],
)
def test_generation_rules(row, update, changed):
    merge.check(update)
    assert merge.fold(row, update) == {**(row or {}), **changed}
    (change,) = merge.merge([update])
    assert merge.apply(row, change) == {**(row or {}), **changed}


def test_a_replayed_callbacks_history_keeps_every_attempt_row():
    t, cid = T, "msg_1"

    def attempted(generation: int, attempt: int, state: str, at: int) -> list[StatusUpdate]:
        return status.callback_attempted(
            cid,
            attempt=attempt,
            state=state,
            status_code=500 if state != "delivered" else 204,
            error=None,
            started_at=at,
            duration_ms=1.0,
            outcome=state,
            next_attempt_at=None,
            at=at,
            generation=generation,
        )

    sequence = [
        status.callback_queued(cid, "https://example.com/", None, t),
        *attempted(0, 1, "retrying", t + 1),
        *attempted(0, 2, "dead", t + 2),
        status.callback_queued(cid, "https://example.com/", None, t + 3, generation=1),
        *attempted(1, 1, "delivered", t + 4),
        *attempted(0, 2, "dead", t + 2),  # a late duplicate of generation 0
    ]
    rows = one_by_one({}, sequence)
    assert rows[("callbacks", cid)]["status"] == "delivered"
    assert rows[("callbacks", cid)]["generation"] == 1 and rows[("callbacks", cid)]["attempts"] == 1
    attempts = {key: row for (table, key), row in rows.items() if table == "callback_attempts"}
    assert sorted(attempts) == [f"{cid}:1", f"{cid}:2", f"{cid}:g1:1"]
    assert [(r["generation"], r["attempt"], r["outcome"]) for _, r in sorted(attempts.items())] == [
        (0, 1, "retrying"),
        (0, 2, "dead"),
        (1, 1, "delivered"),
    ]


@pytest.mark.parametrize(
    ("key", "derived"),
    [
        ("msg_a:3", ("msg_a", 0, 3)),  # the form of generation 0, as the previous version wrote every key
        ("msg_a:g2:3", ("msg_a", 2, 3)),
        ("a:b:1", ("a:b", 0, 1)),
        ("msg_a:g0:1", ("msg_a:g0", 0, 1)),  # generation 0 has no g-form: this g0 is part of the id
        ("msg_a:gx:1", ("msg_a:gx", 0, 1)),
        (":g1:1", (":g1", 0, 1)),
    ],
)
def test_attempt_keys_say_callback_generation_and_attempt(key, derived):
    callback_id, generation, attempt = derived
    assert merge.RULES["callback_attempts"].derive(key) == {
        "callback_id": callback_id,
        "generation": generation,
        "attempt": attempt,
    }
    if ":g" not in callback_id:
        assert status.attempt_key(callback_id, generation, attempt) == key


@pytest.mark.parametrize(
    ("update", "message"),
    [
        (StatusUpdate("callbacks", "m", 1, {"generation": -1}), "out of range"),
        (StatusUpdate("callbacks", "m", 1, {"generation": None}), "may not be null"),
        (StatusUpdate("callbacks", "m", 1, {"generation": "1"}), "must be an integer"),
        (StatusUpdate("callback_attempts", "m:g1:1", 1, {"generation": 2}), "contradicts"),
        (StatusUpdate("callback_attempts", "m:g1:x", 1, {}), "<callback id>:g<generation>:<attempt number>"),
        (StatusUpdate("callback_attempts", "m:g1:", 1, {}), "<callback id>:<attempt number>"),
    ],
)
def test_check_refuses_bad_generations(update, message):
    with pytest.raises(ValueError, match=message):
        merge.check(update)
