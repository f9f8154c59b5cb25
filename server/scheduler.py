"""The scheduler decides which frames run together; the executor runs one batch at a time.

Batching rules: at most one frame per track per batch (a track's next frame needs its previous state),
at most `max_batch_size` frames, and a batch starts at the latest `max_wait_s` after its oldest ready frame
arrived, or as soon as it is full. Tracks are served in the order they became ready, so a slow stream is
simply absent from a batch: nobody waits for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from .executor import BatchExecutor
from .log import event
from .tracks import PendingFrame, Track

DropHandler = Callable[[Track, PendingFrame, str], None]
BatchHandler = Callable[[list[Track], list[PendingFrame], list, float], Awaitable[None]]
FailHandler = Callable[[list[Track], list[PendingFrame], BaseException], None]


class Scheduler:
    def __init__(self, executor: BatchExecutor, *, max_batch_size: int, max_wait_s: float,
                 on_drop: DropHandler, on_batch: BatchHandler, on_fail: FailHandler) -> None:
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._on_drop = on_drop
        self._on_batch = on_batch
        self._on_fail = on_fail
        self._ready: dict[str, Track] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self.batches = 0

    def submit(self, track: Track, frame: PendingFrame) -> None:
        for old, reason in track.offer(frame):
            self._on_drop(track, old, reason)
        self._mark_ready(track)

    def _mark_ready(self, track: Track) -> None:
        if track.waiting and not track.in_flight and track.track_id not in self._ready:
            self._ready[track.track_id] = track
            self._idle.clear()
            self._wake.set()

    def discard(self, track: Track) -> None:
        self._ready.pop(track.track_id, None)

    def pending(self) -> int:
        return len(self._ready)

    async def wait_idle(self) -> None:
        """Until no frame waits and no batch runs."""
        await self._idle.wait()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _oldest_ready(self) -> float:
        return min((t.waiting[0].enqueued for t in self._ready.values() if t.waiting), default=time.monotonic())

    async def run(self) -> None:
        while True:
            if not self._ready:
                self._idle.set()
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            deadline = self._oldest_ready() + self.max_wait_s
            while len(self._ready) < self.max_batch_size and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            await self._run_one()

    async def _run_one(self) -> None:
        ids = list(self._ready)[: self.max_batch_size]
        tracks: list[Track] = []
        frames: list[PendingFrame] = []
        now = time.monotonic()
        for tid in ids:
            track = self._ready.pop(tid)
            frame, dropped = track.take(now)
            for old, reason in dropped:
                self._on_drop(track, old, reason)
            if frame is None:
                continue
            track.in_flight = True
            tracks.append(track)
            frames.append(frame)
        if not tracks:
            return
        try:
            pairs, seconds = await self.executor.step([t.state for t in tracks], [f.rgb for f in frames])
        except Exception as exc:  # a bug or a device error: fail these frames, keep serving
            event("batch_failed", 40, size=len(tracks), error=repr(exc))
            self._on_fail(tracks, frames, exc)
            pairs, seconds = None, 0.0
        self.batches += 1
        try:
            if pairs is not None:
                await self._on_batch(tracks, frames, pairs, seconds)
        finally:
            for track in tracks:
                track.in_flight = False
                self._mark_ready(track)
