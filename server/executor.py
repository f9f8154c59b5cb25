"""Runs engine calls off the event loop on dedicated threads.

`max_in_flight` step calls may run at once (on disjoint tracks): 2 on CUDA, where one batch's host prep
(crop gather, staging) overlaps the previous batch's device work, 1 on CPU, where both would compete for
the same cores. Template embedding for new tracks runs on its own thread, so it never holds a step slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from lorat_infer import TrackingEngine, TrackResult, TrackState

_CPU = torch.device("cpu")


class BatchExecutor:
    def __init__(self, engine: TrackingEngine, max_in_flight: int | None = None) -> None:
        self.engine = engine
        self.max_in_flight = max_in_flight or getattr(engine, "max_in_flight", 1)
        self._pool = ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="lorat-engine")
        self._init_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorat-template")

    async def initialize(self, frames: Sequence[np.ndarray], boxes: Sequence[Sequence[float]]) -> list[TrackState]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._init_pool, self.engine.initialize, list(frames), list(boxes))

    async def step(self, states: Sequence[TrackState], frames: Sequence[np.ndarray]
                   ) -> tuple[list[tuple[TrackState, TrackResult]], float]:
        """One batch -> (pairs, seconds the engine took)."""
        loop = asyncio.get_running_loop()

        def run() -> tuple[list[tuple[TrackState, TrackResult]], float]:
            t0 = time.perf_counter()
            pairs = self.engine.step(list(states), list(frames))
            return pairs, time.perf_counter() - t0

        return await loop.run_in_executor(self._pool, run)

    def engine_info(self) -> dict[str, str]:
        """What the engine resolved (for the log and an info metric): device, family, weights dtype and
        why, compile / CUDA graphs, steps in flight."""
        e = self.engine
        runner = getattr(e, "runner", None)
        return {
            "device": str(getattr(e, "device", "cpu")),
            "family": str(getattr(getattr(e, "family", None), "name", "lorat")),
            "precision": str(getattr(e, "precision", "fp32")),
            "compile": str(bool(getattr(runner, "compiled", False))).lower(),
            "cuda_graphs": str(bool(getattr(runner, "graphs", False))).lower(),
            "max_in_flight": str(self.max_in_flight),
        }

    def register_metrics(self, registry: object, model_id: str = "") -> None:
        """Export `engine_info()` as `lorat_engine_info{model_id=..., ...} 1` in a prometheus_client
        registry (one gauge per registry, a label set per model)."""
        register_engine_info(registry, {model_id: self})

    def jpeg_decoder(self) -> Callable[[bytes], object] | None:
        """nvJPEG decoding into the engine's GPU memory when the engine can crop from device frames; None
        means: decode on the CPU as before (the reason is logged once)."""
        if not getattr(self.engine, "accepts_device_frames", False):
            return None
        from lorat_infer.hwdecode import jpeg_decoder

        return jpeg_decoder(self.engine.device)

    def video_hwaccel(self) -> object | None:
        """A PyAV HWAccel for H.264 sources on the engine's CUDA device, or None (CPU decoding, logged)."""
        from lorat_infer.hwdecode import video_hwaccel

        return video_hwaccel(getattr(self.engine, "device", None) or _CPU)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
        self._init_pool.shutdown(wait=True)


_INFO_LABELS = ("model_id", "device", "family", "precision", "compile", "cuda_graphs", "max_in_flight")


def register_engine_info(registry: object, executors: dict[str, BatchExecutor]) -> None:
    """`lorat_engine_info{model_id, device, family, precision, compile, cuda_graphs, max_in_flight} 1` for
    every served model: what "auto" resolved to (e.g. bf16 weights on an AVX512-BF16 CPU) is visible on
    the metrics page, not only in the log."""
    from prometheus_client import Gauge

    gauge = getattr(registry, "_lorat_engine_info", None)
    if gauge is None:
        gauge = Gauge("lorat_engine_info", "How each model's tracking engine runs (value 1; the labels say).",
                      list(_INFO_LABELS), registry=registry)
        registry._lorat_engine_info = gauge  # type: ignore[attr-defined]
    for model_id, executor in executors.items():
        gauge.labels(model_id=model_id, **executor.engine_info()).set(1)
