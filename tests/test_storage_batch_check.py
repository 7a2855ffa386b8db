"""The column-by-column check of a whole entry never lets through what the per-update check refuses.

And the codec's fast JSON parse reads exactly what the standard library reads.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from storage_helpers import updates
from test_storage_writer import lifecycle

from worker.storage import merge
from worker.storage.batch_check import all_storable
from worker.storage.entries import decode_entry
from worker.storage.rules import INT32, MAX_MS, RULES
from worker.streams import status
from worker.streams.status import MALFORMED, StatusUpdate

HOSTILE = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([-1, 0, 2**31, INT32[1], INT32[1] + 1, MAX_MS, MAX_MS + 1, 10**19, 10**400])
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["", "a\x00b", "\ud800", "é", "queued", "delivered", "lost", "x" * 70])
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
)
KEYS = st.sampled_from(["msg_a", "msg_a:1", "msg_a:g2:3", "a:g0:1", ":1", "m:-1", "", "x" * 90, "\x00", "é:1", "m:g1:"])


@st.composite
def hostile_updates(draw: st.DrawFn) -> StatusUpdate:
    """A valid update, a bit broken or not: a value, the key, the time, the table or a column name."""
    update = draw(updates())
    fields = dict(update.fields)
    table, key, at = update.table, update.key, update.at
    for _ in range(draw(st.integers(0, 2))):
        what = draw(st.sampled_from(["value", "key", "at", "table", "column", "key column", "derived"]))
        if what == "value":
            fields[draw(st.sampled_from(sorted(RULES[update.table].columns)))] = draw(HOSTILE)
        elif what == "key":
            key = draw(KEYS)
        elif what == "at":
            at = draw(HOSTILE)
        elif what == "table":
            table = draw(st.sampled_from([*sorted(RULES), "nope"]))
        elif what == "column":
            fields["colour"] = "red"
        elif what == "key column" and table in RULES:
            fields[RULES[table].key] = draw(st.sampled_from([key, "other"]))
        elif what == "derived":
            fields[draw(st.sampled_from(["callback_id", "attempt", "generation"]))] = draw(HOSTILE)
    return StatusUpdate(table, key, at, fields)  # type: ignore[arg-type]


def passes(update: StatusUpdate) -> bool:
    try:
        merge.check(update)
    except MALFORMED:
        return False
    return True


@settings(max_examples=1500, deadline=None)
@given(st.lists(hostile_updates(), min_size=1, max_size=8))
def test_a_batch_passes_only_if_every_update_passes_check(batch):
    if all_storable(batch):
        assert all(passes(update) for update in batch)


@settings(max_examples=300, deadline=None)
@given(st.lists(hostile_updates(), max_size=8))
def test_decoding_sets_aside_exactly_what_check_refuses(batch):
    try:
        raw = status.encode(batch)
    except (TypeError, ValueError):  # not JSON at all: nothing to compare
        return
    entry = decode_entry("1-0", {b"u": raw.encode("utf-8", "surrogatepass")})
    want = status.decode({b"u": raw.encode("utf-8", "surrogatepass")}, merge.check)
    assert (entry.updates, entry.rejected, entry.raw) == (want.updates, want.rejected, want.raw)


def test_the_writers_own_entries_take_the_fast_path():
    for entry in lifecycle(50, failures=2):
        assert all_storable(entry)
    assert all_storable(status.decode({b"u": status.encode_queued([("msg_1", "https://e.com/", None)], 5)}).updates)
    assert all_storable([status.callback_sending("msg_1", 2, 7, generation=3), status.callback_poisoned("m", "p", 1)])


@pytest.mark.parametrize(
    "update",
    [
        StatusUpdate("callbacks", "m", 1, {"attempts": True}),
        StatusUpdate("callbacks", "m", 1, {"status": None}),
        StatusUpdate("callbacks", "m", 1, {"last_error": "\ud800"}),
        StatusUpdate("callbacks", "m", True, {}),  # type: ignore[arg-type]
        StatusUpdate("callback_attempts", "m:1", 1, {"duration_ms": 10**400}),
        StatusUpdate("callback_attempts", "m:1", 1, {"attempt": 2}),
        StatusUpdate("callback_attempts", "m:g1:1", 1, {"callback_id": "m:g1"}),
    ],
)
def test_what_check_refuses_does_not_pass(update):
    assert not passes(update)
    assert not all_storable([status.callback_queued("msg_1", "https://e.com/", None, 1), update])


JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=500, deadline=None)
@given(JSON_TEXT)
def test_the_fast_parse_reads_what_json_reads(value):
    raw = json.dumps(value).encode("utf-8", "surrogatepass")
    got, want = status.loads(raw), json.loads(raw)
    assert json.dumps(got) == json.dumps(want)  # NaN != NaN: compare the text
    assert type(got) is type(want)


@pytest.mark.parametrize(
    "raw", [b"[123456789012345678901234567890]", b"[-9999999999999999999]", b"[1e400]", b'["\\ud800"]', b"[NaN]"]
)
def test_where_the_parsers_differ_the_standard_library_decides(raw):
    got, want = status.loads(raw), json.loads(raw)
    assert repr(got) == repr(want)
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in got) or raw in (b"[1e400]", b"[NaN]")
