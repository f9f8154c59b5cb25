"""Browser tests of the web console: a real `python -m server` with the built-in default model (its
boxes follow the synthetic object), a synthetic video in its media folder, and Debian's headless Chromium
driven by Playwright. No browser -> the tests fail (never skip): `.ci/run` installs `chromium`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from lorat.v1 import tracker_pb2 as pb
from lorat.v1 import tracker_pb2_grpc as pb_grpc

from tests.service.conftest import ROOT, free_port

SIZE = (320, 240)
FRAMES = 100
ARTIFACTS = Path(os.environ.get("LORAT_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "lorat-console-artifacts"))


def chromium_path() -> str:
    found = os.environ.get("LORAT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("no Chromium for the browser tests: apt-get install chromium (or set LORAT_CHROMIUM)")
    return found


def synthetic(seed: int, n: int = FRAMES) -> tuple[list[np.ndarray], np.ndarray]:
    from lorat_infer.eval.synthetic import generate_sequence

    seq = generate_sequence(seed, num_frames=n, size=SIZE)
    return seq.frames, seq.boxes


def write_video(path: Path, frames: list[np.ndarray], fps: int = 25) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "18"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    h = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


class ConsoleServer:
    def __init__(self, media: Path, log: Path, extra: tuple[str, ...] = ()) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self._log = open(log, "ab")  # noqa: SIM115  (lives as long as the process)
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--grpc-port", str(self.grpc_port), "--metrics-port", "-1",
             "--http-port", str(self.http_port), "--console-media-dir", str(media), *extra],
            cwd=ROOT, env=env, stdout=self._log, stderr=self._log)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.stub = pb_grpc.TrackerStub(self.channel)

    def wait_ready(self, timeout: float = 120) -> ConsoleServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/api/info", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("console not up in time:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("media")
    frames, boxes = synthetic(21)
    write_video(folder / "synthetic.mp4", frames)
    return folder, boxes


@pytest.fixture(scope="module")
def console(media, tmp_path_factory):  # type: ignore[no-untyped-def]
    server = ConsoleServer(media[0], tmp_path_factory.mktemp("console") / "server.log").wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser, console):  # type: ignore[no-untyped-def]
    """A fresh page on the console; `page.problems` collects console errors and uncaught exceptions."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 860})
    pg = ctx.new_page()
    pg.problems = []
    pg.on("console", lambda m: pg.problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.problems.append(f"pageerror: {e}"))
    pg.goto(console.url + "/")
    yield pg
    ctx.close()


def start_grpc_track(stub: pb_grpc.TrackerStub, track_id: str, frame: np.ndarray, box: np.ndarray) -> None:
    stub.StartTrack(pb.StartTrackRequest(
        track_id=track_id, first_frame=raw(frame), initial_box=pb.Box(x=box[0], y=box[1], width=box[2], height=box[3]),
        options=pb.TrackOptions(overload_policy=pb.EVERY_FRAME)), timeout=60)


def raw(rgb: np.ndarray) -> pb.Frame:
    h, w = rgb.shape[:2]
    return pb.Frame(raw=pb.RawImage(format=pb.RawImage.RGB24, width=w, height=h, data=rgb.tobytes()))
