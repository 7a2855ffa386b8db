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
