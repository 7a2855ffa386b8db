"""Fixtures for the storage tests: real PostgreSQL (a unique database per run), SQLite, a private
PostgreSQL server that can be stopped, a private PgBouncer. Use them with
``pytest_plugins = ("storage_fixtures",)``; plain helpers live in ``storage_helpers``.

Nothing here touches a database, schema or server it did not create.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import free_port
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from storage_helpers import TABLES

from worker.storage.engine import make_engine
from worker.storage.migrate import upgrade

PG_ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def _skip_or_fail(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def _admin() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of our own on the machine's PostgreSQL, migrated; dropped after the run."""
    admin = _admin()
    name = f"cbw_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # the server is absent or refuses: skip locally, fail in CI
        admin.dispose()
        _skip_or_fail(f"PostgreSQL at {PG_ADMIN_URL} is unavailable: {e}")
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with admin.connect() as connection:
        connection.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
        )
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def clear_tables(url: str) -> None:
    """Empty the worker's tables (in a database this test run created)."""
    engine = make_engine(url)
    with engine.begin() as connection:
        for table in TABLES:
            connection.execute(table.delete())
    engine.dispose()


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The run's PostgreSQL database, emptied for this test."""
    clear_tables(pg_database)
    return pg_database


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain Redis client (bytes replies, like the writer's)."""
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite file of this test."""
    url = f"sqlite:///{tmp_path / 'worker.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test that uses it runs on SQLite and on PostgreSQL."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


# -- servers of our own ---------------------------------------------------------------------------


def _as_postgres(args: list[str]) -> list[str]:
    """Run as the ``postgres`` user when we are root (PostgreSQL and PgBouncer refuse to run as root)."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        _skip_or_fail(f"no {name} under /usr/lib/postgresql/*/bin")
    return str(found[-1])


class PrivatePostgres:
    """A PostgreSQL server of our own in a temporary directory, on a free port; stop and start it at will."""

    def __init__(self) -> None:
        self.dir = _private_dir("cbw-pg-")
        self.port = free_port()
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"
        data = str(self.dir / "data")
        subprocess.run(
            _as_postgres([_pg_bin("initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )
        self._ctl = [_pg_bin("pg_ctl"), "-D", data, "-l", str(self.dir / "log"), "-w"]
        self._options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"

    def start(self) -> None:
        subprocess.run(_as_postgres([*self._ctl, "-o", self._options, "start"]), check=True, capture_output=True)

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run(_as_postgres([*self._ctl, "-m", mode, "stop"]), check=False, capture_output=True)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private PostgreSQL (migrated), removed after the test."""
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        _skip_or_fail("running as root without runuser: cannot start a private PostgreSQL")
    server = PrivatePostgres()
    try:
        server.start()
        upgrade(server.url)
        yield server
    finally:
        server.remove()


@pytest.fixture
def pgbouncer(pg_database: str) -> Iterator[str]:
    """A private PgBouncer (transaction pooling) in front of the machine's PostgreSQL; yields our database's URL."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        _skip_or_fail("pgbouncer is not installed (apt-get install -y pgbouncer)")
    target = make_url(pg_database)
    workdir = _private_dir("cbw-pgbouncer-")
    port = free_port()
    config = workdir / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={target.host} port={target.port or 5432} user={target.username}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\n"
        "default_pool_size = 2\nmax_client_conn = 50\nserver_reset_query =\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n"
    )
    os.chmod(config, 0o644)
    args = [binary, str(config)]
    if os.geteuid() == 0:
        args = [binary, "-u", "postgres", str(config)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = target.set(port=port).render_as_string(hide_password=False)
    try:
        _wait_for_port(port, process)
        yield url
    finally:
        process.send_signal(signal.SIGINT)  # pgbouncer: SIGINT is a safe shutdown
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("pgbouncer did not listen in time")
