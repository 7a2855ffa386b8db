"""The worker's tables as SQLAlchemy 2.0 declarative models.

Rows are written only by the status writer, from status updates (see
:mod:`worker.streams.status`); how each column merges is declared here, in the
column's ``info``, and read by :mod:`worker.storage.rules`:

- ``merge``: ``"last"`` (default, last write in stream order wins), ``"max"``
  (never decreases: counters, ``updated_at``) or ``"min"`` (``created_at``);
- ``frozen``: the column stops changing once the table's sticky column holds a
  terminal value (a delivered callback keeps the outcome that delivered it);
- ``per_generation``: the column describes one generation of the row (the
  table's ``generation`` column, a callback's replay count): an update of a
  newer generation starts it over from its default, one of an older generation
  leaves it alone. Every ``frozen`` column of such a table is one, so a
  terminal state sticks within its generation only;
- ``choices``: the only values a status column accepts.

There are no foreign keys on purpose: updates for different tables may reach
the database in any order, and whichever arrives first creates its row.
Times are ``TIMESTAMP WITH TIME ZONE`` (UTC); the wire format carries epoch ms.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, MetaData, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..streams.status import CALLBACK_STATES, TERMINAL_CALLBACK_STATES

TASK_STATES = ("queued", "running", "success", "failed")
TASK_CALLBACK_STATES = ("not_required", *CALLBACK_STATES)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = DateTime(timezone=True)
_FROZEN_PER_GENERATION = {"frozen": True, "per_generation": True}  # copied into each column's own info
JSONDocument = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    """Declarative base with deterministic constraint names (stable migrations)."""

    metadata = MetaData(naming_convention=NAMING)


def _created() -> Any:
    return mapped_column(Timestamp, nullable=False, info={"merge": "min"})


def _updated() -> Any:
    return mapped_column(Timestamp, nullable=False, info={"merge": "max"})


def _generation() -> Any:
    # The server default: rows written by a writer of an earlier version, which knows no generation, are generation 0.
    return mapped_column(Integer, nullable=False, default=0, server_default=text("0"), info={"merge": "max"})


class Callback(Base):
    """One webhook callback: where it goes and how its delivery stands."""

    __tablename__ = "callbacks"
    __table_args__ = (
        Index(None, "task_id"),
        Index(None, "status", "updated_at"),
        {"info": {"sticky": "status", "terminal": TERMINAL_CALLBACK_STATES, "generation": "generation"}},
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, default="queued", info={"choices": CALLBACK_STATES, **_FROZEN_PER_GENERATION}
    )
    attempts: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, info={"merge": "max", "per_generation": True}
    )
    last_status_code: Mapped[int | None] = mapped_column(Integer, info=dict(_FROZEN_PER_GENERATION))
    last_error: Mapped[str | None] = mapped_column(Text, info=dict(_FROZEN_PER_GENERATION))
    next_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp, info=dict(_FROZEN_PER_GENERATION))
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp, info=dict(_FROZEN_PER_GENERATION))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    generation: Mapped[int] = _generation()


class CallbackAttempt(Base):
    """One HTTP attempt of a callback; the key is ``"<callback id>:<attempt>"`` (generation 0) or
    ``"<callback id>:g<generation>:<attempt>"``, and says the callback, generation and attempt."""

    __tablename__ = "callback_attempts"
    __table_args__ = (Index(None, "callback_id", "attempt"),)

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    callback_id: Mapped[str] = mapped_column(String(64), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    generation: Mapped[int] = _generation()


class ImageEditTask(Base):
    """One image-edit task: its stages, result or error, and the state of its callback."""

    __tablename__ = "image_edit_tasks"
    __table_args__ = (
        Index(None, "status", "updated_at"),
        {"info": {"sticky": "callback_status", "terminal": TERMINAL_CALLBACK_STATES}},
    )

    task_id: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued", info={"choices": TASK_STATES})
    stage: Mapped[str | None] = mapped_column(String(64))
    timings: Mapped[Any] = mapped_column(JSONDocument, nullable=True)
    stages: Mapped[Any] = mapped_column(JSONDocument, nullable=True)  # stage names; none: IMAGE_STAGES
    params: Mapped[Any] = mapped_column(JSONDocument, nullable=True)
    input_path: Mapped[str | None] = mapped_column(Text)
    result_path: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    callback_url: Mapped[str | None] = mapped_column(Text)
    callback_id: Mapped[str | None] = mapped_column(String(64))
    callback_status: Mapped[str | None] = mapped_column(
        String(16), info={"choices": TASK_CALLBACK_STATES, "frozen": True}
    )
    callback_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, info={"merge": "max"})
    callback_last_status_code: Mapped[int | None] = mapped_column(Integer, info={"frozen": True})
    callback_last_error: Mapped[str | None] = mapped_column(Text, info={"frozen": True})
    created_at: Mapped[datetime] = _created()
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = _updated()


MODELS: tuple[type[Base], ...] = (Callback, CallbackAttempt, ImageEditTask)
