"""The tracks this server holds, and the one path by which a held track ends.

`end(track, status, reason)` is the only way out (StopTrack, a source that gave up, an idle timeout, a
lost lease, a failed start, drain): it marks the track ended, answers every frame still waiting, stops
its source, writes its final state and releases its lease (fenced: only if the lease is still ours),
removes its per-track metric series and replay buffer, publishes the terminal result, and keeps a small
tombstone (its TrackInfo with only the last result) so GetTrack can still answer. Every terminal status
frees the id: a new track may start under it at once.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

from lorat.v1 import tracker_pb2 as pb

from . import convert, errors
from .log import event
from .metrics import Metrics
from .publishing.base import WatchHub
from .state import adapter
from .state.store import RedisStateStore, StoreUnavailable
from .tracks import PendingFrame, Track

MAX_TOMBSTONES = 1024
TERMINAL = (pb.STOPPED, pb.FAILED, pb.MOVED)


class TrackRegistry:
    def __init__(self, *, metrics: Metrics, hub: WatchHub, store: RedisStateStore | None,
                 publish: Callable[[pb.TrackResult], Awaitable[None]],
                 discard: Callable[[Track], None], tombstone_ttl_s: float = 3600.0) -> None:
        self.metrics = metrics
        self.hub = hub
        self.store = store
        self._publish = publish
        self._discard = discard  # the engine loop forgets a track's ready slot
        self.tombstone_ttl_s = tombstone_ttl_s
        self.tracks: dict[str, Track] = {}
        self.reserved: set[str] = set()
        self.claims: dict[str, int] = {}  # ids being started: their lease epoch (renewed by the keeper)
        self.tombstones: collections.OrderedDict[str, tuple[float, pb.TrackInfo]] = collections.OrderedDict()
        # Called after a track is added or removed (readiness follows a full replica at once, not a poll later).
        self.on_change: Callable[[], None] | None = None

    @property
    def owner(self) -> str:
        return self.store.owner if self.store is not None else ""

    def __len__(self) -> int:
        return len(self.tracks)

    def add(self, track: Track) -> None:
        self.tracks[track.track_id] = track
        self.tombstones.pop(track.track_id, None)
        self.metrics.active_tracks.set(len(self.tracks))
        if self.on_change is not None:
            self.on_change()

    def tombstone(self, track_id: str) -> pb.TrackInfo | None:
        item = self.tombstones.get(track_id)
        if item is None:
            return None
        if time.monotonic() - item[0] > self.tombstone_ttl_s:
            del self.tombstones[track_id]
            return None
        return item[1]

    def answer_dropped(self, track: Track, frame: PendingFrame, reason: str, message: str = "") -> None:
        """A frame that will not be computed: counted, its caller answered, watchers and streams told."""
        track.dropped[reason] += 1
        self.metrics.dropped(track.track_id, reason, live=not track.ended)
        res = convert.result(track, frame, pb.DROPPED, track.state.box_xyxy, 0.0, drop_reason=reason,
                             message=message)
        if frame.future is not None and not frame.future.done():
            frame.future.set_result(res)
        task = asyncio.get_running_loop().create_task(self._publish(res))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    def answer_moved(self, track: Track, frame: PendingFrame) -> None:
        """A frame of a track that moved: UNAVAILABLE naming the new owner (retry there)."""
        track.dropped["moved"] += 1
        self.metrics.dropped(track.track_id, "moved", live=not track.ended)
        if frame.future is not None and not frame.future.done():
            frame.future.set_exception(errors.unavailable(track.message))

    async def end(self, track: Track, status: int, reason: str, *, handoff: bool = False) -> pb.TrackInfo:
        """End a held track on this server, completely. Idempotent; see the module docstring.

        `handoff` (drain): the track stays live in Redis (status TRACKING, lease released), so another
        server resumes it on its next frame."""
        if track.ended:
            return self.tombstone(track.track_id) or convert.info(track, self.owner)
        track.ended = True
        track.status = status
        track.message = reason
        self._discard(track)
        while track.waiting:
            frame = track.waiting.popleft()
            if status == pb.MOVED:
                self.answer_moved(track, frame)
            else:
                self.answer_dropped(track, frame, "stopped", message=reason)
        track.room.set()  # pushers waiting for room see the end
        if track.source_task is not None:
            track.source_task.cancel()
        if track.source_obj is not None:
            await track.source_obj.stop()
        if track.h264 is not None:
            track.h264.close()
            track.h264 = None
        if status != pb.MOVED and self.store is not None and track.epoch:
            stored_status = "TRACKING" if handoff else convert.status_name(status)
            try:
                holder = await self.store.end(track.track_id, track.epoch, adapter.encode_state(
                    track.state, track.counters()), stored_status, live=handoff)
                if holder:
                    event("end_not_written", 30, track_id=track.track_id, holder=holder)
            except StoreUnavailable:
                event("end_state_lost", 30, track_id=track.track_id,
                      note="Redis unreachable; the lease expires by itself")
        track.end_written = True
        self.tracks.pop(track.track_id, None)
        self.metrics.forget_track(track.track_id)
        self.metrics.active_tracks.set(len(self.tracks))
        if self.on_change is not None:
            self.on_change()
        self.hub.forget(track.track_id)
        if not handoff:
            final = convert.result(track, None, status, track.state.box_xyxy, 0.0, message=reason)
            track.last_result = final
            await self._publish(final)
            self.metrics.tracks_ended.labels(convert.status_name(status)).inc()
        info = convert.info(track, self.owner)
        self.tombstones[track.track_id] = (time.monotonic(), info)
        self.tombstones.move_to_end(track.track_id)
        while len(self.tombstones) > MAX_TOMBSTONES:
            self.tombstones.popitem(last=False)
        event("track_ended", track_id=track.track_id, status=convert.status_name(status), reason=reason,
              frames=track.frames_processed)
        return info

    async def end_all(self, status: int, reason: str) -> None:
        for track in list(self.tracks.values()):
            await self.end(track, status, reason)


_BACKGROUND: set[asyncio.Task] = set()  # the loop holds only weak references to tasks
