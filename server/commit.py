"""The commit stage: batch k's fenced state write and publishing run while batch k+1 computes.

A result is released to its caller, watchers and streams only after the state it leads to is in Redis,
so no caller ever sees a result that a crash could lose. Batches queue here in order and are written
together (the latest state of each track, one pipelined round trip of fenced Lua writes), so a slow
Redis costs latency, not engine throughput.

Verdicts per track: written -> its results are released; held by another server -> the track moved: its
frames are answered UNAVAILABLE naming the new owner and the registry ends it (MOVED); no lease at all
(Redis restarted, or the lease lapsed during an outage) -> the results wait until the lease keeper has
re-taken the lease (or found it lost). While Redis is unreachable, results wait and the write is retried;
tracks keep computing.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from lorat.v1 import tracker_pb2 as pb

from . import convert
from .log import event
from .metrics import Metrics
from .registry import TrackRegistry
from .state import adapter
from .state.store import RedisStateStore, StoreUnavailable
from .tracks import PendingFrame, Track

FrameObserver = Callable[[str, Any, pb.TrackResult], None]


@dataclass
class Outputs:
    """Computed frames waiting for their state write: one entry per (track, frame, result)."""

    items: list[tuple[Track, PendingFrame, pb.TrackResult]]
    states: dict[str, tuple[Track, int, bytes, str]] = field(default_factory=dict)  # id -> (track, epoch, blob, status)
    created: float = field(default_factory=time.monotonic)


class Committer:
    def __init__(self, *, store: RedisStateStore | None, registry: TrackRegistry, metrics: Metrics,
                 publish: Callable[[pb.TrackResult], Awaitable[None]], on_redis: Callable[[bool], None],
                 kick_keeper: Callable[[], None], model_ids: Callable[[], dict[str, str]] | None = None) -> None:
        self.store = store
        self.registry = registry
        self.metrics = metrics
        self._publish = publish
        self._on_redis = on_redis  # True: a write succeeded; False: Redis unreachable
        self._kick_keeper = kick_keeper
        self.observers: list[FrameObserver] = []
        self._queue: collections.deque[Outputs] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.held_frames = 0

    # -- the engine loop's side (synchronous: it never waits here) -------------------------------------------

    def submit(self, outputs: Outputs) -> None:
        self._queue.append(outputs)
        self.held_frames += len(outputs.items)
        self.metrics.results_held.set(self.held_frames)
        self._idle.clear()
        self._wake.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    # -- the commit task ----------------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = 0.05
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(self._queue)
            self._queue.clear()
            try:
                verdicts = await self._write(batch)
            except StoreUnavailable:
                self._on_redis(False)
                self._queue.extendleft(reversed(batch))  # keep order; retry after a pause
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2)
                continue
            backoff = 0.05
            self._on_redis(True)
            held: list[Outputs] = []
            for outputs in batch:
                keep = [it for it in outputs.items if verdicts.get(it[0].track_id) == "?"]
                if keep:
                    held.append(Outputs(items=keep, states={k: v for k, v in outputs.states.items()
                                                            if verdicts.get(k) == "?"}))
                await self._release(outputs, verdicts)
            if held:
                self._queue.extendleft(reversed(held))
                self._kick_keeper()
                await asyncio.sleep(backoff)

    async def _write(self, batch: list[Outputs]) -> dict[str, str]:
        """Write the latest state of every track in `batch`; -> {track id: "" | holder | "?"}."""
        latest: dict[str, tuple[Track, int, bytes, str]] = {}
        for outputs in batch:
            latest.update(outputs.states)
        if self.store is None:
            return {tid: "" for tid in latest}
        verdicts: dict[str, str] = {}
        for tid, (track, *_) in latest.items():
            if track.ended:  # its final state was written by registry.end (STOPPED/FAILED), or it moved
                verdicts[tid] = (track.moved_to or "another server") if track.status == pb.MOVED else ""
        # The track's current epoch: a lease re-taken (or first taken, after an outage) since these outputs
        # were computed is still this server's lease for this track.
        writes = [(tid, track.epoch, blob, status) for tid, (track, _epoch, blob, status) in latest.items()
                  if not track.ended]
        t0 = time.monotonic()
        full = [w for w in writes if latest[w[0]][0].needs_full]
        for tid, epoch, blob, status in full:  # rare: after start during an outage, or a new template
            track = latest[tid][0]
            template = await asyncio.to_thread(adapter.encode_template, track.state, track.model_id)  # device copy
            verdicts[tid] = await self.store.save_full(tid, epoch, track.meta_dict(), blob, status, template)
            if verdicts[tid] == "":
                track.needs_full = False
        rest = [w for w in writes if w[0] not in verdicts]
        for (tid, *_), verdict in zip(rest, await self.store.save_states(rest)):
            verdicts[tid] = verdict
        self.metrics.commit_seconds.observe(time.monotonic() - t0)
        return verdicts

    async def _release(self, outputs: Outputs, verdicts: dict[str, str]) -> None:
        now = time.time()
        lost: dict[str, tuple[Track, str]] = {}
        for track, frame, result in outputs.items:
            verdict = verdicts.get(track.track_id, "")
            if verdict == "?":
                continue  # held for the lease keeper
            self.held_frames -= 1
            if verdict:
                lost[track.track_id] = (track, verdict)
                if not track.ended:
                    track.mark_moved(verdict)
                self.registry.answer_moved(track, frame)
                continue
            result.publish_time.CopyFrom(convert.ts(now))
            self.metrics.frame_age_seconds.observe(max(0.0, now - (frame.capture_time or frame.receive_time)))
            track.last_result = result
            if frame.future is not None and not frame.future.done():
                frame.future.set_result(result)
            for observer in self.observers:
                try:
                    observer(track.track_id, frame.rgb, result)
                except Exception as exc:  # an observer must never break the frame path
                    event("frame_observer_error", 30, track_id=track.track_id, error=repr(exc))
            frame.rgb = None
            await self._publish(result)
        self.metrics.results_held.set(max(0, self.held_frames))
        for track, holder in lost.values():
            event("lease_lost", 30, track_id=track.track_id, holder=holder, via="fenced write")
            await self.registry.end(track, pb.MOVED, track.message)
