"""A private Redis Cluster a test starts and stops itself: ``redis-server`` nodes joined by ``redis-cli``.

Every node is a process of the test's own on 127.0.0.1 (never the machine's Redis on 6379),
with an append-only file fsynced on every write, so :meth:`PrivateCluster.restart` keeps the data.
Waits are bounded: a cluster that does not come up raises :class:`RuntimeError`, never hangs.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from testkit.servers import CLUSTER_BUS_OFFSET, START_TIMEOUT, free_cluster_port

READY_TIMEOUT = 30.0  # seconds a cluster may take to report cluster_state:ok with all slots assigned
STOP_TIMEOUT = 10.0  # seconds a node may take to exit on SIGTERM before it is killed
SLOTS = 16384  # hash slots of a Redis Cluster; all of them are assigned once the cluster is ok


def cluster_tools() -> bool:
    """Whether ``redis-server`` and ``redis-cli`` are both on PATH (tests skip otherwise)."""
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


class PrivateCluster:
    """``masters * (1 + replicas)`` cluster nodes on 127.0.0.1, each in its own subdirectory of ``directory``.

    Use as a context manager (``with PrivateCluster(tmp_path) as cluster:``) or call
    :meth:`start` and :meth:`stop`; :meth:`stop` is idempotent.
    """

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 0) -> None:
        self.directory = directory
        self.replicas = replicas
        self.ports: list[int] = _distinct_ports(masters * (1 + replicas))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """The ``redis://`` URL (database 0) of the first node that is a master now (the first node if stopped)."""
        masters = self.master_ports() if self.procs else []
        return f"redis://127.0.0.1:{masters[0] if masters else self.ports[0]}/0"

    @property
    def urls(self) -> list[str]:
        """The ``redis://`` URL of every node, masters and replicas, in port order of creation."""
        return [f"redis://127.0.0.1:{port}/0" for port in self.ports]

    def __enter__(self) -> PrivateCluster:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Start every node, join them (``redis-cli --cluster create``) and wait until the cluster is ok.

        After :meth:`stop`, a second start brings the same cluster and its data back (``nodes-<port>.conf`` stays)."""
        if not cluster_tools():
            raise FileNotFoundError("redis-server or redis-cli is not on PATH")
        if self.procs:
            raise RuntimeError("the private Redis Cluster is already running")
        created = all((self.directory / f"nodes-{port}.conf").exists() for port in self.ports)
        try:
            for port in self.ports:
                self._spawn(port)
            if not created:
                self._create()
            self._wait_ok()
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        """Join the fresh nodes with ``redis-cli --cluster create`` (bounded by :data:`READY_TIMEOUT`)."""
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        args = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", str(self.replicas), "--cluster-yes"]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=READY_TIMEOUT, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"redis-cli --cluster create took over {READY_TIMEOUT:.0f} s: {exc.stdout!r}") from exc
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")

    def stop(self) -> None:
        """SIGTERM every node (each fsyncs its append-only file and exits); SIGKILL one that does not exit."""
        for port in list(self.procs):
            self._terminate(port)

    def restart(self, port: int) -> None:
        """Stop one node with SIGTERM, start it again on the same port and files, wait until the cluster is ok."""
        self._terminate(port)
        self._spawn(port)
        self._wait_ok()

    def kill(self, port: int) -> None:
        """SIGKILL one node and reap it; nothing waits for the cluster to notice (``cluster-node-timeout`` 2 s)."""
        self._terminate(port, signal.SIGKILL)

    def failover(self, port: int) -> int:
        """Promote a replica of the master on ``port`` (``CLUSTER FAILOVER``); return the new master's port.

        Returns once every node sees the replica as a master, the old master is a replica
        synced with it, and the cluster is ok.
        """
        with _client(port) as master:
            myid = master.execute_command("CLUSTER", "MYID")
            replicas = [_port_of(line) for line in master.execute_command("CLUSTER", "REPLICAS", myid)]
        if not replicas:
            raise RuntimeError(f"the node on port {port} is not a master with a replica")
        new = replicas[0]
        self._wait(lambda: _replica_synced(new), f"sync of the replica on port {new} with its master")
        with _client(new) as client:
            client.execute_command("CLUSTER", "FAILOVER")
        self._wait(lambda: _role(new) == "master", f"promotion of the replica on port {new} to master")
        self._wait_ok()
        return new

    def node_of(self, key: str) -> int:
        """The port of the master that owns ``key``'s slot, as the cluster says now (``CLUSTER SLOTS``)."""
        with _client(self._live()[0]) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(master[1])
        raise RuntimeError(f"no master owns slot {slot} of key {key!r}")

    def master_ports(self) -> list[int]:
        """The ports of the live nodes that are masters now, in port order of creation."""
        return [port for port in self._live() if _role(port) == "master"]

    def _spawn(self, port: int) -> None:
        """Start the node on ``port`` (again) with its own files and return once it answers PING."""
        home = self.directory / f"node-{port}"
        home.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(home)]
        args += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.directory / f"nodes-{port}.conf")]
        args += ["--cluster-node-timeout", "2000", "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        args += ["--logfile", str(home / "redis.log"), "--repl-diskless-sync-delay", "0"]  # replicas sync at once
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs[port] = proc
        deadline = time.monotonic() + START_TIMEOUT
        while _role(port) is None:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"cluster node on port {port} did not start (see {home / 'redis.log'})")
            time.sleep(0.02)

    def _terminate(self, port: int, sig: signal.Signals = signal.SIGTERM) -> None:
        proc = self.procs.pop(port, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)

    def _live(self) -> list[int]:
        live = [port for port in self.ports if port in self.procs and self.procs[port].poll() is None]
        if not live:
            raise RuntimeError("no node of the private cluster is running")
        return live

    def _wait_ok(self) -> None:
        """Wait until every live node says ``cluster_state:ok`` with all slots assigned, every replica
        is synced, and every live node sees the others as what their ``ROLE`` says they are."""

        def ok() -> bool:
            truth = {port: _role(port) for port in self._live()}
            return all(_ok(port) and _view(port, list(truth)) == truth for port in truth)

        self._wait(ok, "cluster_state:ok and one view of the nodes on every node")

    def _wait(self, done: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"private Redis Cluster on ports {self.ports}: no {what} after {timeout:.0f} s")
            time.sleep(0.05)


def _distinct_ports(count: int) -> list[int]:
    """``count`` cluster ports whose ports and bus ports (+10000) are all distinct from one another."""
    ports: list[int] = []
    taken: set[int] = set()
    for _ in range(count * 50):
        port = free_cluster_port()
        if port not in taken and port + CLUSTER_BUS_OFFSET not in taken:
            ports.append(port)
            taken |= {port, port + CLUSTER_BUS_OFFSET}
            if len(ports) == count:
                return ports
    raise RuntimeError(f"no {count} distinct free port pairs for a private Redis Cluster")


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2, socket_connect_timeout=1)


def _ask(port: int, *command: str) -> Any:
    """The node's reply to ``command``, or ``None`` if it does not answer."""
    try:
        with _client(port) as client:
            return client.execute_command(*command)
    except redis.RedisError:
        return None


def _role(port: int) -> str | None:
    """``master`` or ``slave`` (what ``ROLE`` says), ``None`` if the node does not answer."""
    reply = _ask(port, "ROLE")
    return None if reply is None else str(reply[0])


def _replica_synced(port: int) -> bool:
    """Whether the node on ``port`` is a replica whose link to its master is up."""
    reply = _ask(port, "ROLE") or ["?"]
    return bool(reply[0] == "slave" and reply[3] == "connected")


def _ok(port: int) -> bool:
    """Whether the node says ``cluster_state:ok`` with all 16384 slots assigned (and, for a replica, is synced)."""
    lines = str(_ask(port, "CLUSTER", "INFO")).splitlines()
    ready = "cluster_state:ok" in lines and f"cluster_slots_assigned:{SLOTS}" in lines
    return ready and (_role(port) == "master" or _replica_synced(port))


def _port_of(line: str) -> int:
    """The port in a ``CLUSTER NODES``-style line (``<id> 127.0.0.1:<port>@<bus> <flags> ...``)."""
    return int(line.split()[1].partition("@")[0].rpartition(":")[2])


def _view(observer: int, ports: list[int]) -> dict[int, str | None]:
    """What ``CLUSTER NODES`` on ``observer`` says the nodes on ``ports`` are: ``master``, ``slave``, ``failing``."""
    view: dict[int, str | None] = dict.fromkeys(ports)
    for line in filter(None, str(_ask(observer, "CLUSTER", "NODES") or "").splitlines()):
        flags = set(line.split()[2].split(","))
        view[_port_of(line)] = "failing" if {"fail", "fail?"} & flags else "master" if "master" in flags else "slave"
    return {port: view[port] for port in ports}
