"""Checking a whole entry's updates column by column, once, instead of field by field.

:func:`worker.storage.merge.check` is the rule: what it refuses, the database
must never see. It costs a few Python calls per field, about half the
writer's CPU. :func:`all_storable` answers the same question for a batch
with work done per column in C (``map``, ``min``/``max``, ``set``, ``join``):
updates are grouped by table and field names (the leader and producer write a
handful of shapes), and each column's values are checked together.

It may say ``False`` for a batch ``check`` would take (an unusual shape, a
JSON column, a key column among the fields): the caller then checks item by
item as before. It never says ``True`` for a batch ``check`` would refuse,
which ``tests/test_storage_merge.py`` checks on generated updates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import compress
from typing import Any

from ..streams.status import StatusUpdate
from .rules import INT32, MAX_MS, RULES, ColumnRule, TableRules

_NONE = type(None)
_INT, _NUMBER, _STR = {int}, {int, float}, {str}


def all_storable(updates: Sequence[StatusUpdate]) -> bool:
    """Whether every update would pass :func:`worker.storage.merge.check` (``False`` may also mean "not sure")."""
    shapes: dict[tuple[str, tuple[str, ...]], list[StatusUpdate]] = {}
    for update in updates:
        shape = (update.table, tuple(update.fields))
        group = shapes.get(shape)
        if group is None:
            shapes[shape] = [update]
        else:
            group.append(update)
    try:
        return all(_shape_storable(table, names, group) for (table, names), group in shapes.items())
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError):  # the slow path names it precisely
        return False


def _shape_storable(table: str, names: tuple[str, ...], group: list[StatusUpdate]) -> bool:
    rules = RULES.get(table)
    if rules is None or rules.key in names:
        return False
    columns = rules.columns
    if not all(name in columns for name in names):
        return False
    if set(map(type, (update.fields for update in group))) != {dict}:
        return False
    keys = [update.key for update in group]
    if set(map(type, keys)) != _STR or min(map(len, keys)) < 1 or max(map(len, keys)) > rules.key_length:
        return False
    if not _text(keys):
        return False
    ats = [update.at for update in group]
    if set(map(type, ats)) != _INT or min(ats) < 0 or max(ats) > MAX_MS:
        return False
    for name in names:
        if not _column_storable(columns[name], [update.fields[name] for update in group]):
            return False
    return rules.derive is None or _derived_agree(rules, names, group)


def _column_storable(column: ColumnRule, values: list[Any]) -> bool:
    types = set(map(type, values))
    if _NONE in types:
        if not column.nullable:
            return False
        types.discard(_NONE)
        values = list(compress(values, [value is not None for value in values]))
        if not values:
            return True
    if column.kind in ("int", "time"):
        low, high = (0, MAX_MS) if column.kind == "time" else INT32
        if column.merge == "max":
            low = max(low, 0)
        return types == _INT and min(values) >= low and max(values) <= high
    if column.kind == "float":
        return types <= _NUMBER and all(map(math.isfinite, values))
    if column.kind == "str":
        if types != _STR or not _text(values):
            return False
        if column.length is not None and max(map(len, values)) > column.length:
            return False
        return column.choices is None or set(values) <= column.choices
    return False  # JSON documents: item by item


def _text(values: list[str]) -> bool:
    """Whether PostgreSQL text takes every string: no NUL, no lone surrogate (joined, one C pass each)."""
    joined = "\x01".join(values)
    if "\x00" in joined:
        return False
    if joined.isascii():
        return True
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _derived_agree(rules: TableRules, names: tuple[str, ...], group: list[StatusUpdate]) -> bool:
    """What each key says (a ``ValueError`` for a key it cannot say it of) agrees with the fields that repeat it."""
    derive = rules.derive
    assert derive is not None
    for update in group:
        said = derive(update.key)
        fields = update.fields
        for name, value in said.items():
            if name in fields and fields[name] != value:
                return False
    return True
