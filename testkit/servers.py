"""Servers a test starts and stops itself: a private ``redis-server`` with an append-only file.

A test that kills, restarts or drops the connections of a Redis must own that
Redis: the machine's server is shared by every other test.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

START_TIMEOUT = 10.0  # seconds a fresh redis-server may take to answer PING


CLUSTER_BUS_OFFSET = 10000  # a Redis Cluster node also listens on its port + 10000 (the cluster bus)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too, so both fit below 65536."""
    for _ in range(200):
        port = free_port()
        if port + CLUSTER_BUS_OFFSET > 65535:
            port -= CLUSTER_BUS_OFFSET + 1024 * (port % 7)  # the ephemeral range is high: fold it down
        if port > 1024 and _free(port) and _free(port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node (port and port + 10000)")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def redis_server() -> str | None:
    """The ``redis-server`` executable on PATH, or ``None`` (tests skip then)."""
    return shutil.which("redis-server")


class PrivateRedis:
    """A redis-server of the test's own on 127.0.0.1, with an append-only file so a restart keeps the data.

    ``appendfsync always``: every write a client saw acknowledged survives :meth:`stop`
    and :meth:`start` (the port stays the same, so clients reconnect to the same URL).
    """

    def __init__(self, directory: Path, *extra: str) -> None:
        self.port = free_cluster_port() if "--cluster-enabled" in extra else free_port()
        self.directory = directory
        self.extra = extra  # more redis-server options, e.g. --cluster-enabled yes
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's ``redis://`` URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (again) and return once it answers PING."""
        server = redis_server()
        if server is None:
            raise FileNotFoundError("redis-server is not on PATH")
        args = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always", *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _pings(client):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"private redis-server on port {self.port} did not start")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM: redis-server fsyncs the append-only file and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
