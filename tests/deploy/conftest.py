"""A real `python -m server` (tiny random-weights model, embedded Redis) whose /metrics the deploy tests read."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def metrics_text(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The /metrics page of a running server, scraped once it reports SERVING."""
    import torch

    from lorat_infer import build_model, save_merged

    tmp = tmp_path_factory.mktemp("deploy")
    ckpt = tmp / "tiny.safetensors"
    torch.manual_seed(0)
    save_merged(build_model("tiny").eval(), ckpt)
    port, mport = _free_port(), _free_port()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = open(tmp / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--grpc-port", str(port), "--metrics-port", str(mport),
         "--checkpoint", str(ckpt)], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not come up:\n" + (tmp / "server.log").read_text()[-3000:])
            try:
                req = health_pb2.HealthCheckRequest(service="lorat.v1.Tracker")
                if stub.Check(req, timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                time.sleep(0.1)
        channel.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as resp:
            yield resp.read().decode()
    finally:
        proc.kill()
        proc.wait(10)
        log.close()
