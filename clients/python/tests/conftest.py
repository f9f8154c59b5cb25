"""A real LoRAT server for the SDK tests, started as a subprocess with a tiny random-weights model.

The SDK's own environment has no torch, so the server runs under another interpreter: $LORAT_SERVER_PYTHON,
else the repository's .venv/bin/python. $LORAT_TEST_SERVER=host:port uses a server already running instead.
Without either, server tests are skipped (the unit tests still run).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_python() -> str | None:
    cand = os.environ.get("LORAT_SERVER_PYTHON") or str(REPO / ".venv" / "bin" / "python")
    if not Path(cand).exists():
        return None
    probe = subprocess.run([cand, "-c", "import server.app, lorat_infer"], cwd=REPO, capture_output=True)
    return cand if probe.returncode == 0 else None


class ServerProcess:
    def __init__(self, python: str, workdir: Path) -> None:
        self.python = python
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.checkpoint = workdir / "tiny.safetensors"
        self.log = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self.env.pop("PYTHONPATH", None)

    def make_checkpoint(self) -> None:
        code = ("import torch; from lorat_infer import build_model, save_merged; torch.manual_seed(7); "
                f"save_merged(build_model('tiny').eval(), {str(self.checkpoint)!r})")
        subprocess.run([self.python, "-c", code], cwd=REPO, env=self.env, check=True, capture_output=True)

    def start(self) -> None:
        """Start without waiting: callers wait with the SDK itself (wait_ready / retries)."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "server", "--grpc-port", str(self.port), "--metrics-port", "-1",
                 "--http-port", "-1", "--checkpoint", str(self.checkpoint), "--max-batch-wait-ms", "2"],
                cwd=REPO, env=self.env, stdout=log, stderr=log,
            )

    def wait_serving(self, timeout: float = 90) -> None:
        from lorat_client import Client, LoratError

        deadline = time.monotonic() + timeout
        with Client(self.address, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"server exited:\n{self.log.read_text()[-3000:]}")
                try:
                    client.list()
                    return
                except LoratError:
                    time.sleep(0.1)
        raise RuntimeError(f"server not serving:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="session")
def server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    python = server_python()
    if python is None:
        pytest.skip("no server interpreter (set LORAT_SERVER_PYTHON or build the repo's .venv)")
    proc = ServerProcess(python, tmp_path_factory.mktemp("server"))
    proc.make_checkpoint()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def server_address(server_process: ServerProcess) -> Iterator[str]:
    """host:port of a serving LoRAT server."""
    external = os.environ.get("LORAT_TEST_SERVER")
    if external:
        yield external
        return
    server_process.start()
    server_process.wait_serving()
    yield server_process.address


def moving_square(n: int, size: tuple[int, int] = (160, 120), seed: int = 0) -> tuple[list[np.ndarray], list]:
    """A textured square gliding over a noisy background: frames and ground-truth boxes (x, y, w, h)."""
    w, h = size
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 90, size=(h, w, 3), dtype=np.uint8)
    patch = rng.integers(150, 256, size=(28, 28, 3), dtype=np.uint8)
    frames, boxes = [], []
    for i in range(n):
        x, y = 20 + 3 * i, 30 + i
        img = background.copy()
        img[y : y + 28, x : x + 28] = patch
        frames.append(img)
        boxes.append((x, y, 28, 28))
    return frames, boxes


@pytest.fixture
def square() -> tuple[list[np.ndarray], list]:
    return moving_square(12)


def pytest_sessionfinish(session, exitstatus):  # type: ignore[no-untyped-def]
    """Under `make test` (LORAT_NO_SKIPS=1) a skipped test fails the run: the suite must run whole."""
    if os.environ.get("LORAT_NO_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and session.exitstatus == 0:
        session.exitstatus = 1
        reporter.write_line(f"FAILED: {len(skipped)} test(s) skipped; make test runs the whole suite",
                            red=True, bold=True)
