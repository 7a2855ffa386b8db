"""Coalescing status updates into one change per row: pure functions, no I/O.

The rules (declared on the models, read by :mod:`worker.storage.rules`):

- a field's last write in stream order wins (``merge="last"``);
- counters and ``updated_at`` never decrease (``"max"``), ``created_at`` keeps
  the earliest (``"min"``); every update counts as a write of both at its ``at``
  time unless it sets them itself;
- once a row's sticky status is terminal (a callback ``delivered`` or ``dead``)
  its ``frozen`` columns stop changing, the status included, so the outcome
  that ended a callback stays with it — within its generation: a table with a
  ``generation`` column (a callback's replay count; an update that does not
  set it is generation 0) keeps the highest it was written. An update of a
  newer generation first starts the ``per_generation`` columns over from their
  defaults (status, attempts, last outcome), so a replayed callback is no longer
  terminal; one of an older generation leaves them alone. The other columns
  (url, task id, times, the generation itself) merge across generations.

:func:`fold` is the reference: it applies one update to a row. :func:`merge`
coalesces a batch into :class:`RowChange` values and :func:`apply` applies one
change to a row; for every row and every sequence of updates,
``apply(row, merge(updates))`` equals folding the updates one by one (the
property ``tests/test_storage_merge.py`` checks), and applying a change twice
changes nothing more — so a batch re-applied after a crash is harmless.
:mod:`worker.storage.apply` expresses :func:`apply` in SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..streams.status import StatusUpdate
from .rules import MAX_MS, RULES, ColumnRule, TableRules

Row = dict[str, Any]
_NOTHING: frozenset[str] = frozenset()


@dataclass
class RowChange:
    """Everything a batch does to one row: the merged value of each column it touches.

    ``terminal`` records that the batch itself made the row terminal, so its
    later updates leave the frozen columns alone. For a table with a
    generation column, the ``per_generation`` values are those of the batch's
    newest generation only (the generation column's value, 0 if unwritten):
    that generation starts them over anyway.
    """

    table: str
    key: str
    values: Row = field(default_factory=dict)
    terminal: bool = False


def check(update: StatusUpdate) -> None:
    """Raise ``ValueError`` unless the database can take ``update`` as it is."""
    rules = RULES.get(update.table)
    if rules is None:
        raise ValueError(f"unknown status table {update.table!r}")
    if not isinstance(update.key, str):
        raise ValueError("a status key is a string")
    rules.check_key(update.key)
    if isinstance(update.at, bool) or not isinstance(update.at, int) or not 0 <= update.at <= MAX_MS:
        raise ValueError(f"'at' must be epoch milliseconds, got {update.at!r}")
    if not isinstance(update.fields, Mapping):
        raise ValueError("'fields' must be an object")
    derived = rules.derive(update.key) if rules.derive is not None else {}
    for name, value in update.fields.items():
        if name == rules.key:
            if value != update.key:
                raise ValueError(f"field {name}={value!r} contradicts the key {update.key!r}")
            continue
        column = rules.columns.get(name)
        if column is None:
            raise ValueError(f"{update.table} has no column {name!r}")
        column.check(value)
        if name in derived and value != derived[name]:
            raise ValueError(f"field {name}={value!r} contradicts the key {update.key!r}")


def merge(updates: Iterable[StatusUpdate]) -> list[RowChange]:
    """Coalesce updates (in stream order, already :func:`check`-ed) into one change per row."""
    changes: dict[tuple[str, str], RowChange] = {}
    for update in updates:
        change = changes.get((update.table, update.key))
        if change is None:
            change = changes[(update.table, update.key)] = RowChange(update.table, update.key)
        absorb(change, update)
    return list(changes.values())


def absorb(change: RowChange, update: StatusUpdate) -> None:
    """Fold one more update into ``change`` (the hot path: plain dict work, no per-field objects)."""
    rules = RULES[change.table]
    values, merges, fields = change.values, rules.merges, update.fields
    if not values:  # the batch's first update of the row (the common case): nothing to combine with
        values.update(fields)
        values.pop(rules.key, None)
        for name in rules.implicit:
            if name not in fields:
                values[name] = update.at
        if rules.sticky is not None and fields.get(rules.sticky) in rules.terminal:
            change.terminal = True
        return
    older = _NOTHING
    if rules.generation is not None:
        generation, newest = fields.get(rules.generation, 0), values.get(rules.generation, 0)
        if generation > newest:  # a newer generation: what the batch said of the older ones no longer counts
            for name in rules.per_generation:
                values.pop(name, None)
            change.terminal = False
        elif generation < newest:
            older = rules.per_generation
    frozen = rules.frozen if change.terminal else _NOTHING
    for name, value in fields.items():
        if name in frozen or name in older or name == rules.key:
            continue
        if name in values and merges[name] != "last":
            values[name] = _combine(merges[name], values[name], value)
        else:
            values[name] = value
    for name in rules.implicit:
        if name not in fields:
            values[name] = _combine(merges[name], values[name], update.at) if name in values else update.at
    if rules.sticky is not None and not older and fields.get(rules.sticky) in rules.terminal:
        change.terminal = True


def fold(row: Row | None, update: StatusUpdate) -> Row:
    """The reference rule: ``row`` (``None`` if it does not exist yet) after ``update``."""
    rules = RULES[update.table]
    return _apply(rules, update.key, row, _fields(rules, update))


def apply(row: Row | None, change: RowChange) -> Row:
    """``row`` (``None`` if it does not exist yet) after a merged change."""
    return _apply(RULES[change.table], change.key, row, change.values)


def _apply(rules: TableRules, key: str, row: Row | None, values: Mapping[str, Any]) -> Row:
    out = rules.defaults(key) if row is None else dict(row)
    older = _NOTHING
    if rules.generation is not None:
        current, incoming = out.get(rules.generation) or 0, values.get(rules.generation, 0)
        if incoming > current:  # the row starts over, as inserting it would have it
            defaults = rules.defaults(key)
            out.update({name: defaults[name] for name in rules.per_generation})
        elif incoming < current:
            older = rules.per_generation
    terminal = rules.sticky is not None and out.get(rules.sticky) in rules.terminal
    for name, value in values.items():
        column = rules.columns[name]
        if name in older or (column.frozen and terminal):
            continue
        out[name] = combine(column, out.get(name), value)
    return out


def combine(column: ColumnRule, old: Any, new: Any) -> Any:
    """The value of ``column`` after writing ``new`` over ``old``."""
    return _combine(column.merge, old, new)


def _combine(merge: str, old: Any, new: Any) -> Any:
    if merge == "last":
        return new
    if new is None:
        return old
    if old is None:
        return new
    return max(old, new) if merge == "max" else min(old, new)


def _fields(rules: TableRules, update: StatusUpdate) -> Row:
    fields = {name: value for name, value in update.fields.items() if name != rules.key}
    for name in rules.implicit:
        fields.setdefault(name, update.at)
    return fields
