"""Alembic environment: runs migrations on the worker's own engine (see :mod:`worker.storage.engine`).

:func:`worker.storage.migrate.upgrade` configures it; ``alembic`` on the command
line works too with ``-x database_url=...``.
"""

from __future__ import annotations

from alembic import context

from worker.storage.engine import make_engine
from worker.storage.models import Base

config = context.config


def run() -> None:
    """Run the migrations online, in one transaction."""
    url = config.attributes.get("database_url") or context.get_x_argument(as_dictionary=True).get("database_url")
    if not url:
        raise SystemExit("no database URL: use python -m worker.storage migrate")
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


run()
