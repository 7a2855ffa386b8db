"""How each table's columns merge and what values they accept, read once from the models.

This is pure data: :mod:`worker.storage.merge` folds updates with it and
:mod:`worker.storage.apply` writes the same rules as SQL. Validation here is
what keeps one malformed update from poisoning a whole flush: everything the
database could refuse (unknown column, wrong type, out-of-range integer,
over-long string, NUL byte, unknown status) is refused first, in Python.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Integer, String, Table

from .models import MODELS

INT32 = (-(2**31), 2**31 - 1)
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_KEY = 1024  # keys of unbounded (TEXT) key columns
IMPLICIT_TIMES = ("created_at", "updated_at")  # every update writes them at its own time unless it sets them


@dataclass(frozen=True)
class ColumnRule:
    """One column: its value kind (``str``, ``int``, ``float``, ``time``, ``json``) and merge rule."""

    name: str
    kind: str
    merge: str = "last"
    nullable: bool = True
    frozen: bool = False
    per_generation: bool = False
    default: Any = None
    choices: frozenset[str] | None = None
    length: int | None = None

    def check(self, value: Any) -> None:
        """Raise ``ValueError`` unless ``value`` is acceptable for this column."""
        if value is None:
            if not self.nullable:
                raise ValueError(f"{self.name} may not be null")
            return
        if self.kind in ("int", "time"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{self.name} must be an integer, got {type(value).__name__}")
            low, high = (0, MAX_MS) if self.kind == "time" else INT32
            if self.merge == "max":
                low = max(low, 0)
            if not low <= value <= high:
                raise ValueError(f"{self.name}={value} is out of range {low}..{high}")
        elif self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{self.name} must be a finite number")
        elif self.kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"{self.name} must be a string, got {type(value).__name__}")
            _storable(self.name, value)
            if self.length is not None and len(value) > self.length:
                raise ValueError(f"{self.name} is longer than {self.length} characters")
            if self.choices is not None and value not in self.choices:
                raise ValueError(f"{self.name}={value!r} is not one of {sorted(self.choices)}")
        else:
            json.dumps(value, allow_nan=False)  # raises ValueError/TypeError for what JSON cannot hold
            _storable_json(self.name, value)


@dataclass(frozen=True)
class TableRules:
    """A table's key column, its columns (key excluded), its sticky status column and its generation column, if any."""

    name: str
    key: str
    key_length: int
    columns: Mapping[str, ColumnRule]
    sticky: str | None = None
    terminal: frozenset[str] = frozenset()
    generation: str | None = None
    derive: Callable[[str], dict[str, Any]] | None = None
    # Derived once, for the hot paths (merging, building statement parameters):
    merges: Mapping[str, str] = field(default_factory=dict)  # column -> "last" | "max" | "min"
    frozen: frozenset[str] = frozenset()  # columns that stop changing once the row is terminal
    per_generation: frozenset[str] = frozenset()  # columns a newer generation starts over
    implicit: tuple[str, ...] = ()  # created_at/updated_at: written by every update at its time
    bits: Mapping[str, int] = field(default_factory=dict)  # column -> its bit in a change mask
    insert_defaults: Mapping[str, Any] = field(default_factory=dict)  # the non-null column defaults

    def defaults(self, key: str) -> dict[str, Any]:
        """The row before any update: column defaults, plus what the key itself says."""
        row = {name: column.default for name, column in self.columns.items()}
        if self.derive is not None:
            row.update(self.derive(key))
        return row

    def check_key(self, key: str) -> None:
        """Raise ``ValueError`` for a key the table cannot hold."""
        if not key or len(key) > self.key_length:
            raise ValueError(f"{self.name} key {key[:80]!r} is empty or too long")
        _storable("key", key)
        if self.derive is not None:
            self.derive(key)


def _storable(name: str, value: str) -> None:
    """PostgreSQL text (and jsonb) takes neither NUL characters nor lone surrogates."""
    if "\x00" in value:
        raise ValueError(f"{name} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name} is not valid Unicode text ({e.reason})") from e


def _storable_json(name: str, value: Any) -> None:
    if isinstance(value, str):
        _storable(name, value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(name, str(key))
            _storable_json(name, item)
    elif isinstance(value, list):
        for item in value:
            _storable_json(name, item)


def _attempt_of(key: str) -> dict[str, Any]:
    """What an attempt key says: ``"<callback id>:<n>"`` (generation 0) or ``"<callback id>:g<generation>:<n>"``.

    The worker's callback ids hold no ``:``; an id that ended in ``:g<digits>``
    would read as the second form.
    """
    head, sep, number = key.rpartition(":")
    if not sep or not head or not _counter(number):
        raise ValueError(
            f"callback_attempts key {key!r} is not '<callback id>:<attempt number>'"
            " or '<callback id>:g<generation>:<attempt number>'"
        )
    callback_id, sep, generation = head.rpartition(":")
    if sep and callback_id and generation[:1] == "g" and _counter(generation[1:]) and int(generation[1:]) > 0:
        return {"callback_id": callback_id, "attempt": int(number), "generation": int(generation[1:])}
    return {"callback_id": head, "attempt": int(number), "generation": 0}


def _counter(digits: str) -> bool:
    return digits.isascii() and digits.isdigit() and int(digits) <= INT32[1]


def _kind(column: Any) -> str:
    kind = column.type
    if isinstance(kind, DateTime):
        return "time"
    if isinstance(kind, Integer):
        return "int"
    if isinstance(kind, Float):
        return "float"
    if isinstance(kind, JSON):
        return "json"
    if isinstance(kind, String):
        return "str"
    raise TypeError(f"no merge kind for column {column.name} of type {kind!r}")


def _rules(table: Table) -> TableRules:
    (key,) = table.primary_key.columns
    columns = {}
    for column in table.columns:
        if column.primary_key:
            continue
        info = column.info
        default = getattr(column.default, "arg", None)
        choices = info.get("choices")
        columns[column.name] = ColumnRule(
            name=column.name,
            kind=_kind(column),
            merge=info.get("merge", "last"),
            nullable=bool(column.nullable),
            frozen=bool(info.get("frozen", False)),
            per_generation=bool(info.get("per_generation", False)),
            default=default,
            choices=frozenset(choices) if choices is not None else None,
            length=getattr(column.type, "length", None),
        )
    generation = table.info.get("generation")
    per_generation = frozenset(name for name, column in columns.items() if column.per_generation)
    frozen = frozenset(name for name, column in columns.items() if column.frozen)
    if generation is not None and (columns[generation].merge != "max" or generation in per_generation):
        raise TypeError(f"{table.name}.{generation}: a generation column merges by max and belongs to every generation")
    if generation is not None and not frozen <= per_generation:
        raise TypeError(
            f"{table.name}: a frozen column must be per_generation, or a terminal state would stick forever"
        )
    if generation is None and per_generation:
        raise TypeError(f"{table.name}: per_generation columns need the table's generation column")
    return TableRules(
        name=table.name,
        key=key.name,
        key_length=getattr(key.type, "length", None) or MAX_KEY,
        columns=columns,
        sticky=table.info.get("sticky"),
        terminal=frozenset(table.info.get("terminal", ())),
        generation=generation,
        derive=_attempt_of if table.name == "callback_attempts" else None,
        merges={name: column.merge for name, column in columns.items()},
        frozen=frozen,
        per_generation=per_generation,
        implicit=tuple(name for name in IMPLICIT_TIMES if name in columns),
        bits={name: 1 << index for index, name in enumerate(columns)},
        insert_defaults={name: column.default for name, column in columns.items() if column.default is not None},
    )


RULES: dict[str, TableRules] = {rules.name: rules for rules in (_rules(model.__table__) for model in MODELS)}  # type: ignore[arg-type]
