"""The engine loop: plan a batch (plain data), run it on its model's executor, hand the outputs on.

Batching rules: at most one frame per track per batch (a track's next frame needs its previous state),
one model per batch, at most `max_batch_size` frames. As in Triton's dynamic batcher, a batch launches as
soon as `preferred_batch_size` frames are ready, or else `max_wait_s` after it *could* have launched: the
later of its oldest ready frame's arrival and the moment an engine slot became free (a frame that waited
for a busy engine does not count that time against the wait, so a batch formed behind a running one
still gets the chance to fill). Tracks are served in the order they became ready, so a slow stream is
simply absent from a batch: nobody waits for it.

The loop never waits on Redis or callers: outputs go to `on_outputs` (the committer's queue) and the
next batch is planned at once. Up to `executor.max_in_flight` batches (on disjoint tracks) may run at
the same time. Frames whose caller gave up (deadline, cancel) are dropped ("caller_gone") at planning,
never computed. `last_progress` and `oldest_wait()` are what the supervisor watches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .log import event
from .tracks import PendingFrame, Track


@dataclass
class Plan:
    """One batch: which model, which tracks, which frames (plain data, as vLLM's SchedulerOutput)."""

    model_id: str
    tracks: list[Track]
    frames: list[PendingFrame]


DropHandler = Callable[[Track, PendingFrame, str], None]
OutputHandler = Callable[[Plan, list, float], None]
FailHandler = Callable[[Plan, BaseException], None]


class EngineLoop:
    def __init__(self, executors: dict[str, Any], *, max_batch_size: int, max_wait_s: float,
                 on_drop: DropHandler, on_outputs: OutputHandler, on_fail: FailHandler,
                 preferred_batch_size: int = 0) -> None:
        self.executors = executors  # model id -> executor (server/executor.py)
        self.max_batch_size = max_batch_size
        # Launch without waiting once this many frames are ready (0 or more than the maximum: the maximum).
        self.preferred_batch_size = min(preferred_batch_size or max_batch_size, max_batch_size)
        self.max_wait_s = max_wait_s
        self._slot_free_at = 0.0  # when an engine slot last became free after all were busy
        self._on_drop = on_drop
        self._on_outputs = on_outputs
        self._on_fail = on_fail
        self._ready: dict[str, Track] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._running: set[asyncio.Task] = set()
        self._stopping = False
        self.batches = 0
        self.last_progress = time.monotonic()

    # -- the per-track slot side ------------------------------------------------------------------------

    def submit(self, track: Track, frame: PendingFrame) -> None:
        for old, reason in track.offer(frame):
            self._on_drop(track, old, reason)
        self._mark_ready(track)

    def _mark_ready(self, track: Track) -> None:
        if track.waiting and not track.in_flight and not track.ended and track.track_id not in self._ready:
            self._ready[track.track_id] = track
            self._idle.clear()
            self._wake.set()

    def discard(self, track: Track) -> None:
        self._ready.pop(track.track_id, None)

    def pending(self) -> int:
        return len(self._ready)

    def oldest_wait(self) -> float:
        """Seconds the oldest waiting frame has waited (0 when none waits)."""
        now = time.monotonic()
        return max((now - t.waiting[0].enqueued for t in self._ready.values() if t.waiting), default=0.0)

    async def wait_idle(self) -> None:
        """Until no frame waits and no batch runs."""
        await self._idle.wait()

    def stop(self) -> None:
        """Drain mode: run what is queued now, without waiting for fuller batches; then return."""
        self._stopping = True
        self._wake.set()

    # -- plan / run ---------------------------------------------------------------------------------------

    def _max_in_flight(self) -> int:
        return max(1, min(int(getattr(ex, "max_in_flight", 1)) for ex in self.executors.values()))

    def _oldest_ready(self) -> float:
        return min((t.waiting[0].enqueued for t in self._ready.values() if t.waiting), default=time.monotonic())

    def _set_idle_if_done(self) -> None:
        if not self._ready and not self._running:
            self._idle.set()

    async def run(self) -> None:
        while True:
            if not self._ready:
                self._set_idle_if_done()
                if self._stopping and not self._running:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._running) >= self._max_in_flight():
                self._wake.clear()
                await self._wake.wait()
                if len(self._running) < self._max_in_flight():
                    self._slot_free_at = time.monotonic()
                continue
            deadline = max(self._oldest_ready(), self._slot_free_at) + self.max_wait_s
            while len(self._ready) < self.preferred_batch_size and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            plan = self.plan()
            if plan is None:
                continue
            task = asyncio.create_task(self._run(plan), name="engine-batch")
            self._running.add(task)
            await asyncio.sleep(0)  # let the batch start before planning the next one

    def plan(self) -> Plan | None:
        """The next batch: the model of the longest-ready track, its ready tracks in order."""
        now = time.monotonic()
        model_id: str | None = None
        plan_tracks: list[Track] = []
        frames: list[PendingFrame] = []
        for tid in list(self._ready):
            if len(plan_tracks) >= self.max_batch_size:
                break
            track = self._ready[tid]
            if model_id is None:
                model_id = track.model_id if track.model_id in self.executors else next(iter(self.executors))
            if track.model_id != model_id and track.model_id in self.executors:
                continue
            del self._ready[tid]
            frame = self._take(track, now)
            if frame is None:
                continue
            track.in_flight = True
            plan_tracks.append(track)
            frames.append(frame)
        if not plan_tracks or model_id is None:
            self._set_idle_if_done()
            return None
        return Plan(model_id=model_id, tracks=plan_tracks, frames=frames)

    def _take(self, track: Track, now: float) -> PendingFrame | None:
        while True:
            frame, dropped = track.take(now)
            for old, reason in dropped:
                self._on_drop(track, old, reason)
            if frame is None:
                return None
            if frame.future is not None and frame.future.done():  # the caller gave up: do not compute
                self._on_drop(track, frame, "caller_gone")
                continue
            return frame

    async def _run(self, plan: Plan) -> None:
        executor = self.executors[plan.model_id]
        try:
            try:
                pairs, seconds = await executor.step([t.state for t in plan.tracks], [f.rgb for f in plan.frames])
            except Exception as exc:  # a bug or a device error: fail these frames, keep serving
                event("batch_failed", 40, size=len(plan.tracks), error=repr(exc))
                self._on_fail(plan, exc)
            else:
                self._on_outputs(plan, pairs, seconds)
            self.batches += 1
            self.last_progress = time.monotonic()
        finally:
            self._running.discard(asyncio.current_task())  # type: ignore[arg-type]
            for track in plan.tracks:
                track.in_flight = False
                self._mark_ready(track)
            self._set_idle_if_done()
            self._wake.set()
