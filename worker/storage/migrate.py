"""Schema migrations with Alembic, configured in code (no ``alembic.ini`` to keep in sync).

Alembic is imported only to migrate: a worker whose schema is current checks
it with one query against :data:`SCHEMA_HEAD` (a test keeps that constant equal
to the migrations' head), since importing Alembic costs every process ~11 MB.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import WorkerError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA_HEAD = "0003"  # the newest revision in migrations/versions (tests/test_storage_*: equal to head())


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration for ``database_url`` with this package's migrations."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` (creates the SQLite file and its directory if needed)."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Revert migrations down to ``revision`` (``"base"`` drops the worker's tables)."""
    from alembic import command

    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> str | None:
    """The revision the database is at, or ``None`` before the first migration (Alembic's version table)."""
    from sqlalchemy import inspect, text

    from .engine import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


class SchemaOutdated(WorkerError):
    """The database's schema is not the one this worker needs; it says which command fixes it."""


def head() -> str:
    """The newest revision this worker's migrations define (read by Alembic)."""
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert revision is not None, "the migrations define no revision"
    return revision


def ensure_schema(database_url: str) -> str:
    """Make sure the schema is current; returns what was done (``"current"`` or ``"migrated"``).

    The embedded default, SQLite, is migrated on the spot. Any other database
    is the operator's: :class:`SchemaOutdated` says to run the migrations.
    """
    at, wanted = current(database_url), SCHEMA_HEAD
    if at == wanted:
        return "current"
    if database_url.startswith("sqlite"):
        upgrade(database_url)
        return "migrated"
    raise SchemaOutdated(
        f"the database is at schema revision {at or 'none'} but this worker needs {wanted}: "
        "run `make migrate` (python -m worker.storage migrate) with the same DATABASE_URL"
    )
