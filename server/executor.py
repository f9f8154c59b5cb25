"""Runs engine calls one at a time on a dedicated thread (torch runs one batch at a time, the event loop
never blocks on it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lorat_infer import TrackingEngine, TrackResult, TrackState


class BatchExecutor:
    def __init__(self, engine: TrackingEngine) -> None:
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorat-engine")

    async def initialize(self, frames: Sequence[np.ndarray], boxes: Sequence[Sequence[float]]) -> list[TrackState]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.engine.initialize, list(frames), list(boxes))

    async def step(self, states: Sequence[TrackState], frames: Sequence[np.ndarray]
                   ) -> tuple[list[tuple[TrackState, TrackResult]], float]:
        """One batch -> (pairs, seconds the engine took)."""
        loop = asyncio.get_running_loop()

        def run() -> tuple[list[tuple[TrackState, TrackResult]], float]:
            t0 = time.perf_counter()
            pairs = self.engine.step(list(states), list(frames))
            return pairs, time.perf_counter() - t0

        return await loop.run_in_executor(self._pool, run)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
