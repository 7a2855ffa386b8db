"""Schema migrations with Alembic, configured in code (no ``alembic.ini`` to keep in sync)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from ..errors import WorkerError

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration for ``database_url`` with this package's migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` (creates the SQLite file and its directory if needed)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Revert migrations down to ``revision`` (``"base"`` drops the worker's tables)."""
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> str | None:
    """The revision the database is at, or ``None`` before the first migration."""
    from alembic.runtime.migration import MigrationContext

    from .engine import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


class SchemaOutdated(WorkerError):
    """The database's schema is not the one this worker needs; it says which command fixes it."""


def head() -> str:
    """The newest revision this worker's migrations define."""
    revision = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert revision is not None, "the migrations define no revision"
    return revision


def ensure_schema(database_url: str) -> str:
    """Make sure the schema is current; returns what was done (``"current"`` or ``"migrated"``).

    The embedded default, SQLite, is migrated on the spot. Any other database
    is the operator's: :class:`SchemaOutdated` says to run the migrations.
    """
    at, wanted = current(database_url), head()
    if at == wanted:
        return "current"
    if database_url.startswith("sqlite"):
        upgrade(database_url)
        return "migrated"
    raise SchemaOutdated(
        f"the database is at schema revision {at or 'none'} but this worker needs {wanted}: "
        "run `make migrate` (python -m worker.storage migrate) with the same DATABASE_URL"
    )
