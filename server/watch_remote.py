"""WatchTracks from any replica: results of tracks that other replicas hold, merged into this replica's
watch stream (server/service.py) next to the results of its own tracks (the in-memory WatchHub).

Chosen per watch, when it starts (a watch of named tracks opened while no other replica is live stays on
this replica's own results, exactly as a single server; it does not widen if replicas join later):

- **Named tracks held elsewhere: their Redis result streams** (`lorat:results:<id>`, written by whichever
  replica holds the track; docs/redis-streams.md), one blocking XREAD loop per track. Why streams rather
  than a proxy to the owner: a stream follows the track wherever it goes (an owner that dies, drains or
  loses its lease hands the track to another replica, which appends to the same stream), so the watch needs
  no owner lookup and misses nothing across a move; the stream holds the final STOPPED/FAILED result; and
  `from_frame` replays from the stream, which holds more than the owner's replay buffer. Cost: one Redis
  connection per followed track and watch while it blocks (capped: `MAX_FOLLOWED`), a few ms more latency.
  Stream delivery is at-least-once, so each followed track's results are de-duplicated on (frame number,
  status), the high-water mark resetting after a final result (a new track with the same id).
  A named track this replica holds comes from the hub; if it is MOVED away later, it is followed from its
  stream from then on.
- **All tracks (no ids), or named tracks when result streams are off (`--publish-streams false`) or more
  than `MAX_FOLLOWED` of them are elsewhere: a fan-out** -- the same WatchTracks request, marked as forwarded
  (each replica answers with its own tracks only), to every other live replica, re-listed every
  `refresh_s` so that replicas that start later are watched too. Every result is published by exactly one
  replica, once, so the merge needs no de-duplication; a track that moves is seen from its new owner.
  A replica started after the watch is watched from its next listing (up to `refresh_s` of its results can
  be missed), and a replica's replay buffer is its own (`from_frame` replays what that replica holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from lorat.v1 import tracker_pb2 as pb

from .forward import Forwarder
from .log import event
from .publishing.redis_streams import RedisStreamReader, StreamResult

MAX_FOLLOWED = 64  # per watch: Redis stream readers (each holds a connection while it blocks)
NO_TRACK = "\x00"  # never a track id: keeps a hub watcher's id set from meaning "all tracks"
FINAL = (pb.STOPPED, pb.FAILED)
_STATUSES = dict(pb.TrackStatus.items())


def _ts(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    t = Timestamp()
    t.FromNanoseconds(int(round(seconds * 1e9)))
    return t


def result_from_stream(r: StreamResult) -> pb.TrackResult:
    """A stream entry (docs/redis-streams.md) as the TrackResult it was written from."""
    out = pb.TrackResult(track_id=r.track_id, frame_number=r.frame_number, source_pts=r.pts,
                         box=pb.Box(x=r.x, y=r.y, width=r.w, height=r.h), confidence=r.confidence,
                         status=_STATUSES.get(r.status, 0),
                         drop_reason=r.drop_reason, message=r.message, model_id=r.model_id)
    for name, value in (("capture_time", r.capture_time), ("receive_time", r.receive_time),
                        ("publish_time", r.publish_time)):
        ts = _ts(value)
        if ts is not None:
            getattr(out, name).CopyFrom(ts)
    return out


class RemoteWatch:
    """The other replicas' part of one WatchTracks stream; `offer` puts results into the caller's queue."""

    def __init__(self, forwarder: Forwarder, context: Any, request: pb.WatchTracksRequest, local: set[str],
                 *, refresh_s: float = 2.0) -> None:
        self.forwarder = forwarder
        self.context = context
        self.request = request
        self.refresh_s = refresh_s
        self.ids = list(dict.fromkeys(request.track_ids))
        self.local = local
        self.use_streams = False
        self.fan_out = not self.ids  # all tracks: always (a replica may start later)
        self.hub_ids: set[str] = set(self.ids)  # the ids the hub watcher serves (empty: all tracks)
        self._remote: list[str] = []
        self._marks: dict[str, tuple[int, set[int]]] = {}
        self._tasks: list[asyncio.Task] = []
        self._fanout: dict[str, asyncio.Task] = {}  # "instance nonce" -> its watch stream
        self._offer: Callable[[pb.TrackResult], None] | None = None
        self._starts: dict[str, str] = {}

    async def prepare(self) -> bool:
        """Choose how named tracks are watched; False: this watch needs nothing from other replicas.

        Named tracks are watched here only (as on a single server) while no other replica is live. Else
        each one this replica does not hold is followed on its stream, whose start is read now, before the
        watch counts as started (a result published right after the caller sees the watch begin is not
        missed): its current end for a live watch, its oldest entry for a replay (`from_frame`)."""
        if not self.ids:
            return True
        try:
            others = [r for r in await self.forwarder.replicas.live() if r.instance != self.forwarder.replicas.instance]
        except Exception:  # Redis away: this replica's own tracks only, as before replicas knew each other
            return False
        if not others:
            return False
        remote = [t for t in self.ids if t not in self.local]
        if self.forwarder.stream_redis is None or len(remote) > MAX_FOLLOWED:
            self.fan_out = True
            return True
        self.use_streams = True
        self._remote = remote
        self.hub_ids = {t for t in self.ids if t in self.local} | {NO_TRACK}  # NO_TRACK: never "all tracks"
        prefix = self.forwarder.stream_prefix
        for track_id in remote:
            with contextlib.suppress(Exception):  # Redis away: the follower finds the start itself
                self._starts[track_id] = await self._start_id(f"{prefix}:{track_id}", self.request.from_frame,
                                                              False)
        return True

    def start(self, offer: Callable[[pb.TrackResult], None]) -> None:
        self._offer = offer
        loop = asyncio.get_running_loop()
        if self.use_streams:
            for track_id in self._remote:
                self._tasks.append(loop.create_task(
                    self._follow(track_id, self.request.from_frame, start=self._starts.get(track_id)),
                    name=f"watch-stream-{track_id}"))
        if self.fan_out:  # all tracks, or named ones without streams
            self._tasks.append(loop.create_task(self._refresh(), name="watch-fanout"))

    def accept(self, result: pb.TrackResult) -> bool:
        """A hub result about to be sent: a named track MOVED away is followed from its stream from now."""
        if self.use_streams and result.status == pb.MOVED and result.track_id in self.hub_ids:
            self.hub_ids.discard(result.track_id)
            self._marks[result.track_id] = (int(result.frame_number), {pb.MOVED})
            self._tasks.append(asyncio.get_running_loop().create_task(
                self._follow(result.track_id, 0, from_start=True), name=f"watch-stream-{result.track_id}"))
        return True

    # -- named tracks: their result streams ------------------------------------------------------------

    async def _start_id(self, stream: str, from_frame: int, from_start: bool) -> str:
        if from_frame > 0 or from_start:
            return "0-0"
        last = await self.forwarder.stream_redis.xrevrange(stream, count=1)
        if not last:
            return "0-0"
        entry_id = last[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def _follow(self, track_id: str, from_frame: int, from_start: bool = False,
                      start: str | None = None) -> None:
        redis = self.forwarder.stream_redis
        reader: RedisStreamReader | None = None
        while True:
            try:
                if reader is None:
                    prefix = self.forwarder.stream_prefix
                    if start is None:
                        start = await self._start_id(f"{prefix}:{track_id}", from_frame, from_start)
                    reader = RedisStreamReader(redis, track_id, last_id=start, prefix=prefix, block_ms=1000,
                                               count=256)
                batch = await reader.read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away or failing over: retry (the stream keeps what it missed)
                event("watch_stream_error", 20, track_id=track_id, error=type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            for r in batch:
                if r.frame_number >= from_frame:
                    self._deliver(result_from_stream(r))

    def _deliver(self, result: pb.TrackResult) -> None:
        frame, statuses = self._marks.get(result.track_id, (-1, set()))
        if result.frame_number < frame or (result.frame_number == frame and result.status in statuses):
            return  # a repeat (at-least-once delivery) or older than what the watch already sent
        if result.frame_number > frame:
            statuses = set()
        statuses.add(result.status)
        self._marks[result.track_id] = (int(result.frame_number), statuses)
        if result.status in FINAL:  # a new track with this id starts again at frame 0
            self._marks[result.track_id] = (-1, set())
        assert self._offer is not None
        self._offer(result)

    # -- all tracks: every other live replica's own results --------------------------------------------

    async def _refresh(self) -> None:
        while True:
            try:
                live = await self.forwarder.replicas.live()
            except Exception as exc:  # Redis away: keep the streams we have, list again later
                event("watch_fanout_list_failed", 20, error=type(exc).__name__)
                live = []
            for replica in live:
                if replica.instance == self.forwarder.replicas.instance:
                    continue
                key = f"{replica.instance} {replica.nonce}"
                task = self._fanout.get(key)
                if task is None or task.done():
                    self._fanout[key] = asyncio.get_running_loop().create_task(
                        self._proxy(replica.address), name=f"watch-fanout-{replica.instance}")
            await asyncio.sleep(self.refresh_s)

    async def _proxy(self, address: str) -> None:
        remaining = self.context.time_remaining()
        call = self.forwarder.stub(address).WatchTracks(self.request, metadata=self.forwarder.metadata(self.context),
                                                        timeout=remaining)
        self.forwarder.count("WatchTracks")
        started = time.monotonic()
        try:
            async for result in call:
                assert self._offer is not None
                self._offer(result)
        except grpc.aio.AioRpcError as exc:  # that replica went away (its tracks show up at their new owner)
            if exc.code() != grpc.StatusCode.CANCELLED:
                event("watch_fanout_ended", 20, address=address, code=exc.code().name,
                      after_s=round(time.monotonic() - started, 1))
        finally:
            call.cancel()

    async def close(self) -> None:
        tasks = [*self._tasks, *self._fanout.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
