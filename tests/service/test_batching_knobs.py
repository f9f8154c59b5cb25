"""Issue 10's serving knobs: Triton-style batching (preferred size, wait from when a batch could launch,
a large default batch on CUDA), the engine info metric, and JPEG decoding on the engine's GPU hook."""

from __future__ import annotations

import asyncio
import io
import time

import numpy as np
import pytest
import torch
from PIL import Image
from prometheus_client import generate_latest

from lorat_infer import TrackingEngine, build_model
from server.decode import FrameLimits, decode_image
from server.engine_loop import EngineLoop
from server.executor import BatchExecutor, register_engine_info
from server.metrics import Metrics
from server.settings import Settings, load_settings
from server.tracks import Options, PendingFrame, Track


@pytest.fixture(scope="module")
def executor() -> BatchExecutor:
    torch.manual_seed(0)
    return BatchExecutor(TrackingEngine(build_model("tiny"), device="cpu", precision="fp32"))


def _frame(n: int) -> PendingFrame:
    rgb = np.random.default_rng(n).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    return PendingFrame(rgb=rgb, frame_number=n, pts=n, capture_time=None, receive_time=time.time())


async def _tracks(executor: BatchExecutor, n: int) -> list[Track]:
    states = await executor.initialize([_frame(0).rgb] * n, [[40, 30, 30, 30]] * n)
    return [Track(track_id=f"t{i}", state=s, model_id="m", options=Options("latest", 10.0, 8))
            for i, s in enumerate(states)]


class GatedExecutor:
    """The real executor, one batch at a time, whose first batch waits for the test to open a gate."""

    max_in_flight = 1

    def __init__(self, inner: BatchExecutor) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.calls = 0

    async def step(self, states, frames):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == 1:
            await self.gate.wait()
        return await self.inner.step(states, frames)


def test_batch_limits_default_to_a_large_batch_on_cuda() -> None:
    assert Settings().batch_limits() == (16, 16)
    assert Settings(device="cuda").batch_limits() == (64, 64)
    assert Settings(device="cuda:1", preferred_batch_size=32).batch_limits() == (64, 32)
    assert Settings(max_batch_size=4, preferred_batch_size=99).batch_limits() == (4, 4)
    s = load_settings(["--preferred-batch-size", "8"], env={"LORAT_MAX_BATCH_SIZE": "24"})
    assert s.batch_limits() == (24, 8)
    with pytest.raises(ValueError, match="preferred_batch_size"):
        Settings(preferred_batch_size=-1).validate()


def test_a_preferred_batch_launches_without_waiting(executor: BatchExecutor) -> None:
    async def run() -> list[list[str]]:
        batches: list[list[str]] = []

        def on_outputs(plan, pairs, seconds) -> None:  # type: ignore[no-untyped-def]
            batches.append([t.track_id for t in plan.tracks])

        # The wait (10 minutes) would fail the test; the preferred size (2 of at most 8) must launch first.
        sched = EngineLoop({"m": executor}, max_batch_size=8, preferred_batch_size=2, max_wait_s=600.0,
                           on_drop=lambda *a: None, on_outputs=on_outputs, on_fail=lambda *a: None)
        tracks = await _tracks(executor, 2)
        task = asyncio.create_task(sched.run())
        for t in tracks:
            sched.submit(t, _frame(1))
        await asyncio.wait_for(sched.wait_idle(), 60)
        sched.stop()
        await task
        return batches

    assert asyncio.run(run()) == [["t0", "t1"]]


def test_the_wait_starts_when_a_batch_could_launch(executor: BatchExecutor) -> None:
    """A frame that waited longer than the wait behind a busy engine still gets the full wait once the
    engine is free, so a frame arriving just after joins its batch (Triton's max_queue_delay)."""
    wait_s = 2.0

    async def run() -> list[list[str]]:
        gated = GatedExecutor(executor)
        batches: list[list[str]] = []
        first_done = asyncio.Event()

        def on_outputs(plan, pairs, seconds) -> None:  # type: ignore[no-untyped-def]
            batches.append([t.track_id for t in plan.tracks])
            first_done.set()

        sched = EngineLoop({"m": gated}, max_batch_size=8, preferred_batch_size=2, max_wait_s=wait_s,
                           on_drop=lambda *a: None, on_outputs=on_outputs, on_fail=lambda *a: None)
        t0, t1, t2 = await _tracks(executor, 3)
        task = asyncio.create_task(sched.run())
        sched.submit(t0, _frame(1))
        while gated.calls == 0:  # t0's batch is running (held at the gate)
            await asyncio.sleep(0.01)
        sched.submit(t1, _frame(1))
        await asyncio.sleep(wait_s + 0.3)  # t1 has now waited longer than the wait, behind the busy engine
        gated.gate.set()
        await asyncio.wait_for(first_done.wait(), 60)
        await asyncio.sleep(0.2)  # well within the wait that starts now
        sched.submit(t2, _frame(1))
        await asyncio.wait_for(sched.wait_idle(), 60)
        sched.stop()
        await task
        return batches

    assert asyncio.run(run()) == [["t0"], ["t1", "t2"]]


def test_engine_info_metric_names_each_model_and_its_precision(executor: BatchExecutor) -> None:
    metrics = Metrics()
    other = BatchExecutor(TrackingEngine(build_model("tiny"), device="cpu", precision="bf16"))
    register_engine_info(metrics.registry, {"default": executor, "other": other})
    register_engine_info(metrics.registry, {"third": executor})  # a second call reuses the gauge
    text = generate_latest(metrics.registry).decode()
    lines = [line for line in text.splitlines() if line.startswith("lorat_engine_info{")]
    assert len(lines) == 3
    assert any('model_id="default"' in line and 'precision="fp32"' in line and 'device="cpu"' in line
               and 'family="lorat"' in line and line.endswith(" 1.0") for line in lines)
    assert any('model_id="other"' in line and 'precision="bf16"' in line for line in lines)
    # Without CUDA: no GPU decoders, the server keeps decoding on the CPU.
    assert executor.jpeg_decoder() is None and executor.video_hwaccel() is None


def _encoded(fmt: str) -> tuple[bytes, np.ndarray]:
    rgb = np.random.default_rng(3).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue(), rgb


def test_jpeg_goes_to_the_gpu_decoder_and_falls_back_to_the_cpu() -> None:
    limits = FrameLimits(64, 64)
    jpeg, _ = _encoded("JPEG")
    png, png_rgb = _encoded("PNG")
    cpu = decode_image(jpeg, limits)
    seen: list[bytes] = []

    def fake_gpu(data: bytes) -> str:
        seen.append(data)
        return "decoded on the device"

    assert decode_image(jpeg, limits, fake_gpu) == "decoded on the device" and seen == [jpeg]
    np.testing.assert_array_equal(decode_image(png, limits, fake_gpu), png_rgb)  # PNG: never nvJPEG
    assert len(seen) == 1

    def refusing_gpu(data: bytes) -> None:
        raise RuntimeError("nvJPEG: unsupported JPEG")

    np.testing.assert_array_equal(decode_image(jpeg, limits, refusing_gpu), cpu)
    with pytest.raises(Exception, match="over the server limit"):  # limits are checked before any decoder
        decode_image(jpeg, FrameLimits(16, 16), fake_gpu)
