"""A local Redis Cluster on loopback (three masters, no replicas), for tests and trying the cluster layout.

Debian's ``redis-server`` started three times in cluster mode on free ports,
joined with ``redis-cli --cluster create``; stopped by the PIDs it started.
Where a ``REDIS_URL`` points at a real cluster, use that instead.

Examples
--------
>>> cluster = LocalRedisCluster("/tmp/never-started")
>>> cluster.url   # nothing runs until start()
''
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from streamrec.services import ServiceError, _free_port, _port_open, _stop_pid, ensure_redis_server

__all__ = ["LocalRedisCluster"]


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and below 65536."""
    for _ in range(200):
        port = _free_port()
        if port <= 55_535 and not _port_open(port + 10_000):
            return port
    raise ServiceError("no free port pair (port, port + 10000) for a Redis Cluster node")


class LocalRedisCluster:
    """Three ``redis-server`` processes in cluster mode under ``state_dir``."""

    def __init__(self, state_dir: str | Path, nodes: int = 3) -> None:
        self.state_dir = Path(state_dir)
        self.nodes = nodes
        self.ports: list[int] = []
        self.pids: list[int] = []

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<first port>/0`` once started (any node lets a cluster client discover the rest)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0" if self.ports else ""

    def start(self, timeout: float = 60.0) -> LocalRedisCluster:
        server = ensure_redis_server()
        cli = str(Path(server).with_name("redis-cli"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for n in range(self.nodes):
            port = _cluster_port()
            folder = self.state_dir / f"node-{n}"
            folder.mkdir(exist_ok=True)
            pidfile = folder / "redis.pid"
            # node timeout 15 s: a node slowed by a loaded machine must not be voted failed mid-test
            cmd = [
                server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                "--cluster-config-file", str(folder / "nodes.conf"), "--cluster-node-timeout", "15000",
                "--save", "", "--appendonly", "no", "--daemonize", "yes", "--pidfile", str(pidfile),
                "--dir", str(folder), "--logfile", str(folder / "redis.log"),
            ]  # fmt: skip
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                self.stop()
                raise ServiceError(f"redis-server (cluster node) failed to start: {result.stdout}{result.stderr}")
            deadline = time.monotonic() + 30
            while not (pidfile.exists() and _port_open(port)) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not pidfile.exists():
                log = (folder / "redis.log").read_text(errors="replace")[-1500:]
                self.stop()
                raise ServiceError(f"a Redis Cluster node did not start on port {port}:\n{log}")
            self.ports.append(port)
            self.pids.append(int(pidfile.read_text().strip()))
        create = [cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports], "--cluster-replicas", "0",
                  "--cluster-yes"]  # fmt: skip
        result = subprocess.run(create, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            self.stop()
            raise ServiceError(f"redis-cli --cluster create failed: {result.stdout[-1500:]}{result.stderr[-1500:]}")
        # Every node must see the whole cluster, not only the first: a node that has not yet heard
        # of the others by gossip answers "CLUSTERDOWN" to the keys it is asked for.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._node_ready(cli, port) for port in self.ports):
                return self
            time.sleep(0.2)
        self.stop()
        raise ServiceError(f"the local Redis Cluster did not reach cluster_state:ok on every node in {timeout:.0f} s")

    def _node_ready(self, cli: str, port: int) -> bool:
        """Whether the node on ``port`` reports the cluster ok, every slot assigned and every node known."""
        info = subprocess.run([cli, "-p", str(port), "cluster", "info"], capture_output=True, text=True).stdout
        return (
            "cluster_state:ok" in info
            and "cluster_slots_ok:16384" in info
            and f"cluster_known_nodes:{self.nodes}" in info
        )

    def stop(self) -> None:
        for pid in self.pids:
            _stop_pid(pid, "redis-server")
        self.pids, self.ports = [], []

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
