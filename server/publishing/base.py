"""Result fan-out: every published TrackResult goes to each `ResultSink`.

`WatchHub` is the in-memory sink behind WatchTracks: a bounded replay buffer per track (for `from_frame`)
and one bounded queue per watcher (a slow watcher loses its oldest results, never slows tracking).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Protocol, runtime_checkable

from lorat.v1 import tracker_pb2 as pb

from ..log import event


@runtime_checkable
class ResultSink(Protocol):
    async def publish(self, result: pb.TrackResult) -> None:
        """Deliver one result; must not block for long (sinks are awaited in turn)."""


class Watcher:
    def __init__(self, track_ids: set[str], maxsize: int = 1024) -> None:
        self.track_ids = track_ids
        self.queue: asyncio.Queue[pb.TrackResult] = asyncio.Queue(maxsize=maxsize)
        self.lost = 0

    def wants(self, track_id: str) -> bool:
        return not self.track_ids or track_id in self.track_ids

    def offer(self, result: pb.TrackResult) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.lost += 1
        self.queue.put_nowait(result)


class WatchHub:
    """In-memory sink for WatchTracks streams."""

    def __init__(self, replay: int = 256) -> None:
        self._replay = replay
        self._history: dict[str, collections.deque[pb.TrackResult]] = {}
        self._watchers: set[Watcher] = set()

    async def publish(self, result: pb.TrackResult) -> None:
        self._history.setdefault(result.track_id, collections.deque(maxlen=self._replay)).append(result)
        for w in self._watchers:
            if w.wants(result.track_id):
                w.offer(result)

    def subscribe(self, track_ids: set[str], from_frame: int) -> tuple[Watcher, list[pb.TrackResult]]:
        """Register a watcher; -> (watcher, held results with frame_number >= from_frame to replay first)."""
        w = Watcher(track_ids)
        self._watchers.add(w)
        backlog: list[pb.TrackResult] = []
        if from_frame > 0:
            ids = track_ids or set(self._history)
            for tid in sorted(ids):
                backlog.extend(r for r in self._history.get(tid, ()) if r.frame_number >= from_frame)
        return w, backlog

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def forget(self, track_id: str) -> None:
        self._history.pop(track_id, None)


async def fan_out(sinks: list[ResultSink], result: pb.TrackResult) -> None:
    """Publish to every sink; a failing sink is logged and skipped."""
    for sink in sinks:
        try:
            await sink.publish(result)
        except Exception as exc:
            event("sink_error", 30, track_id=result.track_id, sink=type(sink).__name__, error=repr(exc))
