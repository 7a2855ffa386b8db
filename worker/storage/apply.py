"""Applying merged changes to the database: one transaction, one statement per table, per flush.

PostgreSQL gets a single statement for the whole flush (data-modifying CTEs:
per table ``UPDATE ... FROM`` the JSON rows, then insert the missing ones) run
in autocommit, so a flush is one round trip and one transaction, and nothing
depends on session state (safe behind PgBouncer's transaction pooling).

``bench/status_bench.py`` measures it against ``INSERT ... ON CONFLICT DO
UPDATE`` on the same batches: the two are equally fast within noise (1,000
rows: p50 about 50 ms each on the development sandbox), so the simpler one
stays. The upsert's ``excluded`` row holds table columns only, so its column
mask must come from a second parameter looked up per row, while here the mask
travels in the row. SQLite runs the same two statements per table inside one
transaction (there are no round trips to save in-process), reading the rows
from a temporary table filled by one ``executemany`` (see :func:`.sql.stage_table`).

If the connection is lost mid-flush the outcome is unknown; the caller simply
applies the same changes again, which the merge rules make harmless.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.sql.elements import TextClause

from ..errors import WorkerError
from . import sql
from .engine import is_postgres
from .merge import RowChange
from .rules import RULES

log = logging.getLogger(__name__)

RACE_RETRIES = 3


class IncompleteWrite(WorkerError):
    """Rows kept being inserted concurrently under the writer; the flush did not complete."""


@cache
def _postgres_statement(tables: tuple[str, ...]) -> TextClause:
    return text(sql.postgres_statement([RULES[name] for name in tables]))


@cache
def _sqlite_statements(table: str) -> tuple[str, str, TextClause, TextClause, str]:
    """Create the stage, fill it (``executemany``), update from it, insert from it, empty it."""
    rules = RULES[table]
    stage = sql.stage_name(rules)
    rows = f"({sql.source(rules, stage, 'sqlite')})"
    columns = sql.stage_columns(rules)
    fill = f"INSERT INTO {stage} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
    update, insert = text(sql.update_from(rules, rows, "sqlite")), text(sql.insert_missing(rules, rows, "sqlite"))
    return sql.stage_table(rules), fill, update, insert, f"DELETE FROM {stage}"


def by_table(changes: Sequence[RowChange]) -> dict[str, list[RowChange]]:
    """Changes grouped per table, tables in a fixed order (the order of ``RULES``)."""
    groups: dict[str, list[RowChange]] = defaultdict(list)
    for change in changes:
        groups[change.table].append(change)
    return {name: groups[name] for name in RULES if groups.get(name)}


def postgres_params(groups: dict[str, list[RowChange]]) -> dict[str, Any]:
    """Parameters of the PostgreSQL statement: per table, the JSON rows and the keys as an array."""
    params: dict[str, Any] = {}
    for name, rows in groups.items():
        params[name] = sql.payload(RULES[name], rows)
        params[f"{name}_keys"] = [change.key for change in rows]
    return params


class StatusStore:
    """Writes merged changes; keeps one connection between flushes and replaces it when it breaks.

    Not thread-safe: one store per writer thread.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = is_postgres(engine)
        self._connection: Connection | None = None
        self.statements = 0  # SQL statements executed, for metrics and the bench

    def apply(self, changes: Sequence[RowChange]) -> None:
        """Apply ``changes`` (at most one per row) in one transaction; raises SQLAlchemy errors as they come."""
        groups = by_table(changes)
        if not groups:
            return
        connection = self._connect()
        try:
            if self.postgres:
                self._apply_postgres(connection, groups)
            else:
                with connection.begin():
                    self._apply_sqlite(connection, groups)
        except (DataError, IntegrityError):
            raise  # the rows were refused; the connection is fine (and the transaction rolled back)
        except BaseException:
            self.close()  # whatever state it is in, the next flush starts on a fresh connection
            raise

    def _connect(self) -> Connection:
        if self._connection is None or self._connection.closed or self._connection.invalidated:
            connection = self.engine.connect()
            if self.postgres:
                connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            self._connection = connection
        return self._connection

    def _apply_postgres(self, connection: Connection, groups: dict[str, list[RowChange]]) -> None:
        statement = _postgres_statement(tuple(groups))
        params = postgres_params(groups)
        for attempt in range(RACE_RETRIES + 1):
            self.statements += 1
            counts = connection.execute(statement, params).one()._mapping
            short = [name for name, rows in groups.items() if int(counts[name]) < len(rows)]
            if not short:
                return
            # Someone inserted one of our rows between our UPDATE's snapshot and our INSERT:
            # the insert skipped it. Applying again is harmless and now finds it.
            log.info("status rows inserted concurrently in %s; applying again (%d)", ", ".join(short), attempt + 1)
        raise IncompleteWrite(f"rows of {', '.join(short)} kept appearing concurrently; will retry the flush")

    def _apply_sqlite(self, connection: Connection, groups: dict[str, list[RowChange]]) -> None:
        for name, rows in groups.items():
            create, fill, update, insert, empty = _sqlite_statements(name)
            self.statements += 5
            connection.exec_driver_sql(create)
            connection.exec_driver_sql(fill, sql.stage_values(RULES[name], rows))  # type: ignore[arg-type]
            connection.execute(update)
            connection.execute(insert)
            connection.exec_driver_sql(empty)  # in the transaction: a refused flush rolls the stage back too

    def close(self) -> None:
        """Return the connection to the pool (or discard it if it broke)."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.close()
            except Exception as e:  # a broken connection may fail to close; it is gone either way
                log.debug("closing a broken connection failed: %s", e)
