"""Database engines from ``DATABASE_URL``: SQLite under ``./var/`` by default, PostgreSQL in production.

PostgreSQL engines are safe behind PgBouncer in transaction pooling mode:
psycopg2 makes no server-side prepared statements, nothing here sets session
state (no ``SET``, no startup ``options``), and connections are pinged when
checked out of the pool, so one that a pooler or a restart closed is replaced
instead of failing a flush. SQLite files use WAL (readers never block the
writer) and a busy timeout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT = 30.0
PG_CONNECT_TIMEOUT = 5


def is_postgres(engine: Engine) -> bool:
    """Whether ``engine`` talks to PostgreSQL (otherwise it is SQLite)."""
    return engine.dialect.name == "postgresql"


def make_engine(database_url: str, **options: Any) -> Engine:
    """An engine for ``database_url`` with the pool and connection settings described above."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(database_url, **options)
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"unsupported database {url.get_backend_name()!r}: use sqlite:/// or postgresql+psycopg2://")
    connect_args = {
        "connect_timeout": PG_CONNECT_TIMEOUT,
        "application_name": "callback-worker",
        # Notice a dead server or pooler within about a minute, not the kernel's two hours.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    defaults: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": 2,
        "max_overflow": 4,
        "pool_recycle": 300,
        "connect_args": connect_args,
    }
    return create_engine(database_url, **{**defaults, **options})


def _sqlite_engine(database_url: str, **options: Any) -> Engine:
    url = make_url(database_url)
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(database_url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT}, **options)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
        cursor.close()

    return engine
