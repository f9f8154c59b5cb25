"""grpc.health.v1 tells load balancers the truth: NOT_SERVING while the model loads and while draining."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lorat_infer import build_model, save_merged

from .conftest import ROOT, free_port

SERVICE = "lorat.v1.Tracker"


def _wait_listening(port: int, deadline: float) -> None:
    """Poll the TCP port directly: a gRPC channel that failed once backs off for a second or more, longer
    than the window we want to observe."""
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.01)
    raise AssertionError("the server never listened")


def _watch_until_serving(channel: grpc.Channel) -> tuple[list[int], object]:
    """Collect health statuses from a Watch until SERVING."""
    stream = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=SERVICE), wait_for_ready=True, timeout=120)
    seen: list[int] = []
    for response in stream:
        seen.append(response.status)
        if response.status == health_pb2.HealthCheckResponse.SERVING:
            return seen, stream
    raise AssertionError(f"the health stream ended before SERVING: {seen}")


def test_not_serving_while_loading_and_while_draining(tmp_path: Path) -> None:
    # A model big enough (S-224, 88 MB) that loading it leaves a visible window after gRPC starts listening.
    torch.manual_seed(0)
    checkpoint = tmp_path / "s224.safetensors"
    save_merged(build_model("S-224").eval(), checkpoint)
    port = free_port()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--grpc-port", str(port), "--metrics-port", "-1",
         "--checkpoint", str(checkpoint)],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=log)
    channel = None
    try:
        _wait_listening(port, time.monotonic() + 120)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        seen, stream = _watch_until_serving(channel)
        assert seen[0] == health_pb2.HealthCheckResponse.NOT_SERVING, seen  # listening, model not ready
        proc.send_signal(signal.SIGTERM)
        after: list[int] = []
        try:
            for response in stream:
                after.append(response.status)
        except grpc.RpcError:
            pass  # the server went away after telling us
        assert health_pb2.HealthCheckResponse.NOT_SERVING in after, after
        assert proc.wait(timeout=60) == 0
    finally:
        if channel is not None:
            channel.close()
        if proc.poll() is None:
            proc.kill()
        log.close()
