"""Start several `lorat-serve` replicas at once (their start-up -- imports, model load -- overlaps instead of
adding up), each then as a `ServerProc` from tests/service/conftest.py had started it alone."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..service.conftest import ROOT, ServerProc


def start_together(servers: list[ServerProc], timeout: float = 120.0,
                   channel: Callable[[ServerProc], grpc.Channel] | None = None) -> None:
    """Launch every server, then wait until each serves (`channel` opens the health check's channel; default
    plaintext). On failure the ones started are killed and the error names the server that failed."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for s in servers:
        s._log = open(s.log_path, "ab")  # noqa: SIM115  (lives as long as the process; ServerProc closes it)
        s.proc = subprocess.Popen(s.args, cwd=ROOT, env=env, stdout=s._log, stderr=s._log)
        s.channel = channel(s) if channel is not None else grpc.insecure_channel(f"127.0.0.1:{s.port}")
    deadline = time.monotonic() + timeout
    try:
        for s in servers:
            assert s.proc is not None and s.channel is not None
            health = health_pb2_grpc.HealthStub(s.channel)
            while True:
                if s.proc.poll() is not None:
                    raise RuntimeError(f"server exited {s.proc.returncode}:\n{s.log_path.read_text()[-3000:]}")
                try:
                    resp = health.Check(health_pb2.HealthCheckRequest(service="lorat.v1.Tracker"), timeout=2)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server not serving in time:\n" + s.log_path.read_text()[-3000:])
                time.sleep(0.2)
    except BaseException:
        for s in servers:
            s.kill()
        raise


# The settings every replica of the cluster tests runs with: a short lease so that deaths are noticed quickly.
CLUSTER_REPLICA = dict(redis_cluster="true", lease_ttl_s=1.0, max_batch_wait_ms=5, http_port=-1)


@contextmanager
def cluster_trio(redis_url: str, checkpoint: Path, logs: Path) -> Iterator[dict[str, ServerProc]]:
    """Replicas "a", "b" and "c" on one Redis Cluster, started together, killed at the end."""
    servers = {name: ServerProc(redis_url, checkpoint, logs / f"{name}.log", instance_id=name, **CLUSTER_REPLICA)
               for name in ("a", "b", "c")}
    try:
        start_together(list(servers.values()))
        yield servers
    finally:
        for s in servers.values():
            s.kill()
