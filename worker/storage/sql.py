"""The merge rules of :mod:`worker.storage.merge` as SQL, for PostgreSQL and SQLite.

A batch of changes for one table travels as ONE bound parameter: a JSON array
of rows, each the full new row (what inserting it would store) plus ``_m``, a
bit mask of the columns the batch actually wrote. The mask is what lets a
single statement tell "set this column to NULL" from "leave it alone".

For an existing row ``t`` and an incoming row ``v``, column ``c`` with bit ``b``
becomes (all expressions read the row as it was before the statement)::

    last     CASE WHEN v._m & b <> 0                              THEN v.c ELSE t.c END
    max      CASE WHEN v._m & b <> 0 AND (t.c IS NULL OR v.c > t.c) THEN v.c ELSE t.c END
    min      ... v.c < t.c ...
    frozen   ... AND NOT (t.<sticky> IS NOT NULL AND t.<sticky> IN (<terminal states>))

and, in a table with a generation column ``g``, a ``per_generation`` column::

    CASE WHEN t.g > v.g THEN t.c   -- the batch is of an older generation: no say
         WHEN t.g < v.g THEN v.c   -- a newer one starts over: the row as inserting it would store it
         ELSE <its expression above> END

so a replayed or duplicate update never moves a terminal callback back within
its generation, never lowers a counter and never makes ``created_at`` later.
"""

from __future__ import annotations

import json
from operator import attrgetter
from typing import Any

import orjson

from .merge import RowChange
from .rules import TableRules

MASK = "_m"

PG_TYPES = {"str": "text", "int": "bigint", "float": "double precision", "time": "bigint", "json": "jsonb"}


def rows(rules: TableRules, changes: list[RowChange]) -> list[dict[str, Any]]:
    """The rows for ``changes`` (all of ``rules``' table), sorted by key (a stable lock order).

    Each row is the row as inserting it would store it: column defaults (and
    what the key says), overwritten by the written values, which is exactly
    ``merge.apply(None, change)`` because defaults never win a merge (validated
    counters are >= their default 0, default states are not terminal), plus
    the column mask ``_m``. Times stay epoch ms.
    """
    bits, defaults, derive = rules.bits, rules.insert_defaults, rules.derive
    out = []
    for change in sorted(changes, key=attrgetter("key")):
        row: dict[str, Any] = {**defaults, **derive(change.key)} if derive is not None else dict(defaults)
        row.update(change.values)
        row[rules.key] = change.key
        row[MASK] = sum(map(bits.__getitem__, change.values))
        out.append(row)
    return out


def payload(rules: TableRules, changes: list[RowChange]) -> str:
    """The JSON parameter for ``changes``: :func:`rows` as a JSON array (a missing key reads as NULL).

    ``orjson`` writes it in half the time; what it refuses (an integer past 64
    bits, a key that is not a string, in a JSON document) the standard library
    writes. Values are validated before they get here: no NaN or infinity
    (which orjson would write as null) reaches it.
    """
    data = rows(rules, changes)
    try:
        return orjson.dumps(data).decode()
    except TypeError:
        return json.dumps(data, separators=(",", ":"), allow_nan=False)


def stage_name(rules: TableRules) -> str:
    """SQLite's temporary table of one flush's rows for ``rules``' table (see :func:`stage_table`)."""
    return f"temp.cbw_stage_{rules.name}"


def stage_table(rules: TableRules) -> str:
    """``CREATE TEMP TABLE`` of untyped columns, so values keep the type they are bound with (as from JSON).

    SQLite runs in the writer's own process: binding each row's values into a
    temporary table costs a fraction of parsing a JSON parameter, which SQLite
    (before 3.45) re-parses for every ``json_extract`` of every column, twice
    (once for the UPDATE, once for the INSERT).
    """
    return f"CREATE TABLE IF NOT EXISTS {stage_name(rules)} ({', '.join(stage_columns(rules))})"


def stage_columns(rules: TableRules) -> list[str]:
    """The staged columns, in order: the key, the mask, then the table's columns."""
    return [rules.key, MASK, *rules.columns]


def stage_values(rules: TableRules, changes: list[RowChange]) -> list[tuple[Any, ...]]:
    """The rows of :func:`rows` as tuples for :func:`stage_columns` (JSON documents as JSON text)."""
    names = stage_columns(rules)
    documents = [name for name, column in rules.columns.items() if column.kind == "json"]
    out = []
    for row in rows(rules, changes):
        for name in documents:
            if row.get(name) is not None:
                row[name] = json.dumps(row[name], separators=(",", ":"), allow_nan=False)
        out.append(tuple(map(row.get, names)))
    return out


def source(rules: TableRules, param: str, dialect: str) -> str:
    """A SELECT of one typed row per staged row (times converted from ms).

    On PostgreSQL the rows come as the JSON parameter ``:param``; on SQLite from
    the temporary table ``param`` (:func:`stage_table`).
    """
    if dialect == "postgresql":
        types = [f"{rules.key} text", f"{MASK} bigint"]
        types += [f"{name} {PG_TYPES[column.kind]}" for name, column in rules.columns.items()]
        picks = [rules.key, MASK]
        for name, column in rules.columns.items():
            # Whole seconds and milliseconds apart: interval * bigint goes through a double,
            # exact for these magnitudes but not for milliseconds since 1970 in one product.
            exact_ms = (
                f"TIMESTAMPTZ 'epoch' + (x.{name} / 1000) * INTERVAL '1 second'"
                f" + (x.{name} % 1000) * INTERVAL '1 millisecond' AS {name}"
            )
            picks.append(exact_ms if column.kind == "time" else name)
        return f"SELECT {', '.join(picks)} FROM json_to_recordset(CAST(:{param} AS json)) AS x({', '.join(types)})"
    picks = [rules.key, MASK]  # SQLite: the rows staged in a temporary table (see stage_table)
    for name, column in rules.columns.items():
        if column.kind == "time":  # SQLAlchemy's own SQLite DATETIME text, to the millisecond
            picks.append(f"strftime('%Y-%m-%d %H:%M:%f', {name} / 1000.0, 'unixepoch') || '000' AS {name}")
        else:
            picks.append(name)
    return f"SELECT {', '.join(picks)} FROM {param}"


def assignments(rules: TableRules, incoming: str = "v", mask: str = f"v.{MASK}") -> list[str]:
    """``column = expression`` for every column, per the table in the module docstring."""
    bits = rules.bits
    terminal = None
    if rules.sticky is not None:
        states = ", ".join(f"'{state}'" for state in sorted(rules.terminal))
        terminal = f"(t.{rules.sticky} IS NOT NULL AND t.{rules.sticky} IN ({states}))"
    out = []
    for name, column in rules.columns.items():
        new, old = f"{incoming}.{name}", f"t.{name}"
        condition = f"({mask} & {bits[name]}) <> 0"
        if column.merge == "max":
            condition += f" AND ({old} IS NULL OR {new} > {old})"
        elif column.merge == "min":
            condition += f" AND ({old} IS NULL OR {new} < {old})"
        if column.frozen and terminal is not None:
            condition += f" AND NOT {terminal}"
        generations = ""
        if column.per_generation and rules.generation is not None:
            row_gen, batch_gen = f"t.{rules.generation}", f"{incoming}.{rules.generation}"
            generations = f"WHEN {row_gen} > {batch_gen} THEN {old} WHEN {row_gen} < {batch_gen} THEN {new} "
        out.append(f"{name} = CASE {generations}WHEN {condition} THEN {new} ELSE {old} END")
    return out


def update_from(rules: TableRules, rows: str, dialect: str) -> str:
    """``UPDATE table SET ... FROM rows AS v WHERE t.key = v.key`` (existing rows only).

    On PostgreSQL the keys also come as an array constant, ``:<table>_keys``:
    the planner cannot see how many rows a JSON function yields (it assumes
    100) and would hash the whole table; with the array it probes the index.
    """
    sets = ",\n  ".join(assignments(rules))
    where = f"t.{rules.key} = v.{rules.key}"
    if dialect == "postgresql":
        where += f" AND t.{rules.key} = ANY(:{rules.name}_keys) RETURNING t.{rules.key}"
    return f"UPDATE {rules.name} AS t SET\n  {sets}\nFROM {rows} AS v\nWHERE {where}"


def insert_missing(rules: TableRules, rows: str, dialect: str, updated: str | None = None) -> str:
    """Insert the rows that do not exist (in ``updated``'s RETURNING, on PostgreSQL; in the table on SQLite)."""
    names = [rules.key, *rules.columns]
    picks = ", ".join(f"v.{name}" for name in names)
    if updated is None:
        absent = f"SELECT 1 FROM {rules.name} AS t WHERE t.{rules.key} = v.{rules.key}"
    else:
        absent = f"SELECT 1 FROM {updated} AS u WHERE u.{rules.key} = v.{rules.key}"
    conflict = f" ON CONFLICT ({rules.key}) DO NOTHING RETURNING {rules.key}" if dialect == "postgresql" else ""
    return (
        f"INSERT INTO {rules.name} ({', '.join(names)})\nSELECT {picks} FROM {rows} AS v\n"
        f"WHERE NOT EXISTS ({absent}){conflict}"
    )


def postgres_statement(tables: list[TableRules]) -> str:
    """One statement that writes every table: ``UPDATE ... FROM`` then insert-missing, per table.

    It returns, per table, how many rows it updated or inserted; fewer than sent
    means a row was inserted concurrently by someone else (the insert skipped it),
    and running the statement again (harmless: changes are idempotent) updates it.
    """
    parts, counts = [], []
    for rules in tables:
        name = rules.name
        parts.append(f"v_{name} AS MATERIALIZED (\n{source(rules, name, 'postgresql')}\n)")
        parts.append(f"u_{name} AS (\n{update_from(rules, f'v_{name}', 'postgresql')}\n)")
        parts.append(f"i_{name} AS (\n{insert_missing(rules, f'v_{name}', 'postgresql', f'u_{name}')}\n)")
        counts.append(f"(SELECT count(*) FROM u_{name}) + (SELECT count(*) FROM i_{name}) AS {name}")
    return "WITH " + ",\n".join(parts) + "\nSELECT " + ", ".join(counts)


def postgres_upsert_statement(tables: list[TableRules]) -> str:
    """The alternative measured by the benchmark: ``INSERT ... ON CONFLICT DO UPDATE`` per table.

    ``excluded`` carries only table columns, so the column mask comes from a
    second parameter, a JSON object ``{key: mask}``, looked up once per row.
    """
    parts, counts = [], []
    for rules in tables:
        name = rules.name
        names = [rules.key, *rules.columns]
        parts.append(f"p_{name} AS (SELECT CAST(:masks_{name} AS jsonb) AS j)")
        mask = f"((SELECT j FROM p_{name}) ->> excluded.{rules.key})::bigint"
        sets = ",\n  ".join(assignments(rules, "excluded", mask))
        parts.append(
            f"c_{name} AS (\nINSERT INTO {name} AS t ({', '.join(names)})\n"
            f"SELECT {', '.join('v.' + n for n in names)} FROM ({source(rules, name, 'postgresql')}) AS v\n"
            f"ON CONFLICT ({rules.key}) DO UPDATE SET\n  {sets}\nRETURNING 1)"
        )
        counts.append(f"(SELECT count(*) FROM c_{name}) AS {name}")
    return "WITH " + ",\n".join(parts) + "\nSELECT " + ", ".join(counts)
