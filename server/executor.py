"""Runs engine calls off the event loop on dedicated threads.

`max_in_flight` step calls may run at once (on disjoint tracks): 2 on CUDA, where one batch's host prep
(crop gather, staging) overlaps the previous batch's device work, 1 on CPU, where both would compete for
the same cores. Template embedding for new tracks runs on its own thread, so it never holds a step slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lorat_infer import TrackingEngine, TrackResult, TrackState


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

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
        self._init_pool.shutdown(wait=True)
