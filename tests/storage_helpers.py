"""Helpers for the storage tests (not fixtures): rows read back in wire units, and hypothesis strategies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st
from sqlalchemy import Engine, select

from worker.storage.models import MODELS
from worker.storage.rules import INT32, MAX_MS, RULES, ColumnRule
from worker.streams.status import StatusUpdate

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TABLES = tuple(model.__table__ for model in MODELS)


def rows(engine: Engine, table: str) -> dict[str, dict[str, Any]]:
    """Every row of ``table`` by key, in wire units (times as epoch ms), as :func:`merge.fold` builds them."""
    rules = RULES[table]
    model_table = next(t for t in TABLES if t.name == table)
    out = {}
    with engine.connect() as connection:
        for row in connection.execute(select(model_table)).mappings():
            values = {name: _wire(rules.columns[name], row[name]) for name in rules.columns}
            out[row[rules.key]] = values
    return out


def _wire(column: ColumnRule, value: Any) -> Any:
    if column.kind == "time" and value is not None:
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return (moment - EPOCH) // timedelta(milliseconds=1)
    return value


# -- hypothesis strategies ------------------------------------------------------------------------

# Strings storable in PostgreSQL, short enough for every column.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(-1e6, 1e6, allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=6,
)


def column_values(column: ColumnRule) -> st.SearchStrategy[Any]:
    """Values the column accepts (what :func:`merge.check` lets through)."""
    if column.choices is not None:
        values: st.SearchStrategy[Any] = st.sampled_from(sorted(column.choices))
    elif column.kind == "time":
        values = st.integers(0, MAX_MS)
    elif column.kind == "int":
        values = st.integers(0 if column.merge == "max" else INT32[0], INT32[1])
    elif column.kind == "float":
        values = st.floats(allow_nan=False, allow_infinity=False)
    elif column.kind == "json":
        values = JSON_VALUES
    else:
        values = TEXT
    return values | st.none() if column.nullable else values


KEYS = {
    "callbacks": ["msg_a", "msg_b", "msg_c"],
    "callback_attempts": ["msg_a:1", "msg_a:2", "msg_b:1"],
    "image_edit_tasks": ["task-1", "task-2"],
}


@st.composite
def updates(draw: st.DrawFn, prefix: str = "") -> StatusUpdate:
    """One valid update of a small key space, so that sequences hit the same rows often."""
    table = draw(st.sampled_from(sorted(RULES)))
    rules = RULES[table]
    key = prefix + draw(st.sampled_from(KEYS[table]))
    derived = rules.derive(key) if rules.derive is not None else {}
    names = draw(st.lists(st.sampled_from(sorted(rules.columns)), unique=True, max_size=6))
    fields = {name: derived[name] if name in derived else draw(column_values(rules.columns[name])) for name in names}
    if rules.sticky is not None and draw(st.booleans()):  # make terminal states common
        fields[rules.sticky] = draw(st.sampled_from(sorted(rules.terminal)))
    return StatusUpdate(table, key, draw(st.integers(0, MAX_MS)), fields)


def prefixed(update: StatusUpdate, prefix: str) -> StatusUpdate:
    """``update`` under keys of its own (``prefix`` before the key and an attempt's callback id)."""
    fields = dict(update.fields)
    if update.table == "callback_attempts" and "callback_id" in fields:
        fields["callback_id"] = prefix + fields["callback_id"]
    return StatusUpdate(update.table, prefix + update.key, update.at, fields)


def assert_rows_are(engine: Engine, prefix: str, want: dict[tuple[str, str], Any]) -> None:
    """The rows under ``prefix`` are exactly ``want`` (``{(table, key): row}``, as ``one_by_one`` folds them)."""
    for table in RULES:
        got = {key: row for key, row in rows(engine, table).items() if key.startswith(prefix)}
        assert got == {key: row for (t, key), row in want.items() if t == table}
