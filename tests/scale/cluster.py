"""A real Redis Cluster on loopback for the scale-out tests: three `redis-server --cluster-enabled yes`
masters joined by `redis-cli --cluster create` (redis-tools), optionally one replica per master."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ..service.conftest import redis_binary


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, so both fit under 65536."""
    while True:
        port = random.randint(20000, 55000)
        if _free(port) and _free(port + 10000):
            return port


def redis_cli() -> str:
    found = shutil.which("redis-cli")
    if not found:
        pytest.skip("no redis-cli (apt-get install redis-tools)")
    return found


class RedisClusterProc:
    """`masters` cluster nodes (and `replicas` per master) in a private folder; `url` names one node."""

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.ports = [cluster_port() for _ in range(masters * (1 + replicas))]
        self.replicas = replicas
        self.dir = Path(tempfile.mkdtemp(prefix="lorat-cluster-"))
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start_node(self, port: int) -> None:
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
             # a replica may always be promoted, however long its master has been gone (a loaded machine)
             "--cluster-replica-validity-factor", "0", "--save", "",
             "--appendonly", "no", "--dir", str(node_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = self.procs[port]

        def up() -> bool:
            if proc.poll() is not None:  # it exited (could not bind): no use waiting
                raise RuntimeError(f"node {port} exited with {proc.returncode}")
            return self.cli(port, "PING") == "PONG"

        self._wait(up, f"node {port} did not start")

    def start(self) -> RedisClusterProc:
        for i, port in enumerate(self.ports):
            for attempt in range(5):  # a bus port (port + 10000) taken since it was picked: pick another pair
                try:
                    self.start_node(port)
                    break
                except RuntimeError:
                    proc = self.procs.pop(port)
                    if proc.poll() is None or attempt == 4:
                        raise
                    port = self.ports[i] = cluster_port()
        subprocess.run([redis_cli(), "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        self.wait_ok()
        return self

    def cli(self, port: int, *args: str) -> str:
        out = subprocess.run([redis_cli(), "-p", str(port), *args], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Every live node says cluster_state:ok and all 16384 slots are assigned."""
        def ok() -> bool:
            for port, proc in self.procs.items():
                if proc.poll() is None:
                    info = self.cli(port, "CLUSTER", "INFO")
                    if "cluster_state:ok" not in info or "cluster_slots_assigned:16384" not in info:
                        return False
            return True
        self._wait(ok, "cluster not ok", timeout)

    def replica_of(self, master: int) -> int:
        """The port of a live replica attached to `master` (INFO replication: slave0:ip=...,port=...)."""
        for line in self.cli(master, "INFO", "replication").splitlines():
            if line.startswith("slave") and "port=" in line:
                return int(line.split("port=", 1)[1].split(",", 1)[0])
        raise RuntimeError(f"node {master} has no replica")

    def masters(self) -> list[int]:
        return [p for p, proc in self.procs.items()
                if proc.poll() is None and "role:master" in self.cli(p, "INFO", "replication")]

    def kill(self, port: int) -> None:
        proc = self.procs[port]
        proc.kill()
        proc.wait(5)

    def pause(self, ports: list[int]) -> None:
        """SIGSTOP: the nodes answer nothing (a machine too loaded to serve them) until `resume`."""
        for port in ports:
            os.kill(self.procs[port].pid, signal.SIGSTOP)

    def resume(self, ports: list[int]) -> None:
        for port in ports:
            os.kill(self.procs[port].pid, signal.SIGCONT)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGCONT)  # a paused node must wake to die
                proc.kill()
                proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _wait(cond, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if cond():
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.1)
        raise RuntimeError(what)
