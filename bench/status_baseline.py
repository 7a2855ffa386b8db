"""The status benchmark's baseline: one UPDATE (or INSERT) per status update, no batching."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from worker.storage.rules import RULES
from worker.streams.status import StatusUpdate

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def one_statement_each(engine: Engine, updates: list[StatusUpdate], *, transaction: bool) -> None:
    """The baseline: one UPDATE per change (an INSERT when it matched no row), no batching."""
    with engine.connect() as opened:
        connection = opened if transaction else opened.execution_options(isolation_level="AUTOCOMMIT")
        for update in updates:
            rules = RULES[update.table]
            values = {name: _value(rules.columns[name].kind, value) for name, value in update.fields.items()}
            values.setdefault("updated_at", _value("time", update.at))
            sets = ", ".join(f"{name} = :{name}" for name in values)
            done = connection.execute(
                text(f"UPDATE {rules.name} SET {sets} WHERE {rules.key} = :k"), {**values, "k": update.key}
            )
            if done.rowcount == 0:
                row = {**rules.defaults(update.key), "created_at": _value("time", update.at), **values}
                row = {name: value for name, value in row.items() if value is not None} | {rules.key: update.key}
                names = ", ".join(row)
                connection.execute(text(f"INSERT INTO {rules.name} ({names}) VALUES (:{', :'.join(row)})"), row)
        if transaction:
            connection.commit()


def _value(kind: str, value: Any) -> Any:
    if kind == "time" and value is not None:
        return EPOCH + timedelta(milliseconds=value)
    return json.dumps(value) if kind == "json" and value is not None else value
