"""TrackManager: the service without gRPC. Owns the tracks, feeds the scheduler, persists state to Redis,
publishes results to sinks, and resumes tracks it does not hold from Redis.

Every public method raises `ServiceError` (a gRPC status code and a message) for caller mistakes; no bad
input reaches the engine or another track.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from lorat.v1 import tracker_pb2 as pb

from lorat_infer import InvalidInput

from . import errors
from .decode import DecodeError, FrameLimits, FrameTooLarge, H264Decoder, decode_frame, payload_kind
from .executor import BatchExecutor
from .log import event
from .metrics import Metrics
from .publishing.base import ResultSink, WatchHub, fan_out
from .pulled import PulledSources
from .scheduler import Scheduler
from .settings import Settings
from .sources.base import FrameSource
from .state.codec import encode_tokens
from .state.restore import track_from_stored
from .state.store import REFRESH_LOST, REFRESH_MISSING, RedisStateStore, StoreUnavailable
from .tracks import POLICY_NAMES, Options, PendingFrame, Track, box_to_proto

TRACK_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
MAX_TOMBSTONES = 4096


def _ts(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts



class TrackManager:
    def __init__(self, settings: Settings, executor: BatchExecutor, model_id: str, metrics: Metrics,
                 store: RedisStateStore | None, sinks: list[ResultSink] | None = None,
                 source_factory: Callable[..., FrameSource] | None = None) -> None:
        self.settings = settings
        self.executor = executor
        self.model_id = model_id
        self.metrics = metrics
        self.store = store
        self.hub = WatchHub(settings.replay_results)
        self.sinks: list[ResultSink] = [self.hub, *(sinks or [])]
        self.pulled = PulledSources(self, source_factory) if source_factory is not None else None
        self.limits = FrameLimits(settings.max_frame_width, settings.max_frame_height)
        self.tracks: dict[str, Track] = {}
        self.tombstones: collections.OrderedDict[str, pb.TrackInfo] = collections.OrderedDict()
        self.reserved: set[str] = set()
        self._resume_locks: dict[str, list] = {}  # track id -> [asyncio.Lock, callers]
        self._decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="lorat-decode")
        self.scheduler = Scheduler(
            executor, max_batch_size=settings.max_batch_size, max_wait_s=settings.max_batch_wait_ms / 1000,
            on_drop=self._on_drop, on_batch=self._on_batch, on_fail=self._on_fail)
        self.redis_ok = store is not None
        self.draining = False
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        # (track, frame, result) after each tracked frame, on the loop: must be cheap (the console keeps
        # references to the latest frame per open view and encodes elsewhere). Empty: no cost.
        self.frame_observers: list[Callable[[Track, PendingFrame, pb.TrackResult], None]] = []

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.scheduler.run(), name="scheduler"))
        if self.store is not None:
            self._tasks.append(asyncio.create_task(self._maintain(), name="redis-maintenance"))

    async def drain(self) -> None:
        """SIGTERM path: refuse new work, finish what is queued, write every track to Redis, free leases."""
        self.draining = True
        event("draining", tracks=len(self.tracks), pending=self.scheduler.pending())
        for track in list(self.tracks.values()):
            if track.source_task is not None:
                track.source_task.cancel()
            if track.source_obj is not None:
                await track.source_obj.stop()
        self.scheduler.stop()  # queued frames run now, without waiting for fuller batches
        try:
            await asyncio.wait_for(self.scheduler.wait_idle(), self.settings.drain_timeout_s)
        except asyncio.TimeoutError:
            event("drain_timeout", 30, pending=self.scheduler.pending())
        for task in self._tasks:
            task.cancel()
        if self.store is not None:
            for track in list(self.tracks.values()):
                try:
                    await self._save_full(track)
                    await self.store.release_lease(track.track_id)
                except StoreUnavailable:
                    event("drain_state_lost", 40, track_id=track.track_id)
            await self.store.close()
        self._decode_pool.shutdown(wait=False)
        event("drained", tracks=len(self.tracks))

    # -- results ------------------------------------------------------------------------------------------

    def make_result(self, track: Track, frame: PendingFrame | None, status: int, box_xyxy: np.ndarray,
                confidence: float, drop_reason: str = "", message: str = "") -> pb.TrackResult:
        return pb.TrackResult(
            track_id=track.track_id,
            frame_number=frame.frame_number if frame is not None else track.frames_received,
            source_pts=frame.pts if frame is not None else 0,
            capture_time=_ts(frame.capture_time) if frame is not None else None,
            receive_time=_ts(frame.receive_time) if frame is not None else None,
            publish_time=_ts(time.time()),
            box=box_to_proto(box_xyxy), confidence=confidence, status=status, drop_reason=drop_reason,
            message=message, model_id=self.model_id)

    def _deliver(self, frame: PendingFrame, result: pb.TrackResult) -> None:
        if frame.future is not None and not frame.future.done():
            frame.future.set_result(result)

    def _count_drop(self, track: Track, reason: str) -> None:
        track.dropped[reason] += 1
        self.metrics.dropped(track.track_id, reason)

    def _on_drop(self, track: Track, frame: PendingFrame, reason: str, message: str = "") -> None:
        """Count a dropped frame, answer its pusher, and tell watchers and streams."""
        self._count_drop(track, reason)
        result = self.make_result(track, frame, pb.DROPPED, track.state.box_xyxy, 0.0, drop_reason=reason,
                                  message=message)
        self._deliver(frame, result)
        task = asyncio.get_running_loop().create_task(fan_out(self.sinks, result))
        self._background.add(task)  # keep a reference until done (the loop holds only weak ones)
        task.add_done_callback(self._background.discard)
        event("frame_dropped", 10, track_id=track.track_id, frame=frame.frame_number, reason=reason)

    def _on_fail(self, tracks: list[Track], frames: list[PendingFrame], exc: BaseException) -> None:
        for track, frame in zip(tracks, frames):
            self._on_drop(track, frame, "internal_error", message=repr(exc))

    async def _on_batch(self, tracks: list[Track], frames: list[PendingFrame], pairs: list,
                        seconds: float) -> None:
        now_mono = time.monotonic()
        self.metrics.batch_size.observe(len(tracks))
        self.metrics.batch_forward_seconds.observe(seconds)
        results = []
        for track, frame, (new_state, res) in zip(tracks, frames, pairs):
            self.metrics.queue_wait_seconds.observe(max(0.0, now_mono - seconds - frame.enqueued))
            track.state = new_state
            track.frames_processed += 1
            result = self.make_result(track, frame, self._lost_or_tracking(track, float(res.score)),
                                      res.box_xyxy, float(res.score))
            track.last_result = result
            results.append(result)
            self.metrics.processed(track.track_id)
        live = [t for t in tracks if t.status == pb.TRACKING]
        await self._save_states(live)
        now = time.time()
        for frame, result in zip(frames, results):
            result.publish_time.CopyFrom(_ts(now))
            self.metrics.frame_age_seconds.observe(max(0.0, now - (frame.capture_time or frame.receive_time)))
            self._deliver(frame, result)
            await fan_out(self.sinks, result)
        for observe in self.frame_observers:
            for track, frame, result in zip(tracks, frames, results):
                observe(track, frame, result)

    def _lost_or_tracking(self, track: Track, score: float) -> int:
        """LOST once the confidence has stayed below --lost-confidence for --lost-frames frames in a row."""
        low = score < self.settings.lost_confidence
        track.low_confidence_run = track.low_confidence_run + 1 if low else 0
        if not self.settings.lost_frames or track.low_confidence_run < self.settings.lost_frames:
            return pb.TRACKING
        if track.low_confidence_run == self.settings.lost_frames:
            self.metrics.targets_lost.inc()
            event("target_lost", track_id=track.track_id, frames=track.low_confidence_run)
        return pb.LOST

    # -- persistence ----------------------------------------------------------------------------------------

    async def _save_states(self, tracks: list[Track]) -> None:
        if self.store is None or not tracks:
            return
        if not self.redis_ok:
            for t in tracks:
                t.dirty = True
            return
        try:
            await self.store.save_states((t.track_id, t.state_dict()) for t in tracks)
        except StoreUnavailable:
            self._redis_down()
            for t in tracks:
                t.dirty = True

    def _redis_down(self) -> None:
        if self.redis_ok:
            event("redis_down", 30, tracks=len(self.tracks))
        self.redis_ok = False
        for t in self.tracks.values():
            t.dirty = True

    async def _save_full(self, track: Track) -> None:
        assert self.store is not None
        tokens = encode_tokens(track.state.template_tokens, self.model_id) if track.status == pb.TRACKING else None
        await self.store.save_full(track.track_id, track.meta_dict(), track.state_dict(), tokens)
        track.dirty = False

    async def _maintain(self) -> None:
        """Refresh leases and TTLs; when Redis comes back (or lost our keys), write the state again."""
        assert self.store is not None
        period = max(0.05, min(1.0, self.settings.lease_ttl_s / 3))
        next_adopt = 0.0
        while True:
            await asyncio.sleep(period)
            try:
                if not self.redis_ok:
                    await self.store.ping()
                    self.redis_ok = True
                    event("redis_back", dirty=sum(t.dirty for t in self.tracks.values()))
                for dirty in [t for t in self.tracks.values() if t.dirty]:
                    await self.store.acquire_lease(dirty.track_id)
                    await self._save_full(dirty)
                    event("state_rewritten", track_id=dirty.track_id)
                ids = list(self.tracks)
                codes = await self.store.refresh(ids)
                for tid, code in codes.items():
                    track = self.tracks.get(tid)
                    if track is None:
                        continue
                    if code == REFRESH_MISSING:
                        await self.store.acquire_lease(tid)
                        await self._save_full(track)
                        event("state_rewritten", track_id=tid, why="missing in redis")
                    elif code == REFRESH_LOST:
                        owner = await self.store.lease_owner(tid)
                        event("lease_lost", 30, track_id=tid, owner=owner)
                        self._evict(track, f"lease taken over by {owner}")
                if time.monotonic() >= next_adopt:
                    next_adopt = time.monotonic() + max(1.0, self.settings.lease_ttl_s / 2)
                    if self.pulled is not None:
                        await self.pulled.adopt()
            except StoreUnavailable:
                self._redis_down()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                event("maintenance_error", 40, error=repr(exc))

    # -- tracks --------------------------------------------------------------------------------------------

    def _check_capacity(self) -> None:
        if len(self.tracks) + len(self.reserved) >= self.settings.max_tracks:
            raise errors.exhausted(f"this server holds its maximum of {self.settings.max_tracks} tracks "
                                   "(--max-tracks); stop a track or use another replica")

    def _options(self, opts: pb.TrackOptions) -> Options:
        policy = POLICY_NAMES.get(opts.overload_policy, self.settings.default_policy)
        if opts.overload_policy not in (0, *POLICY_NAMES):
            raise errors.invalid(f"unknown overload_policy {opts.overload_policy}")
        if opts.max_frame_age_seconds < 0:
            raise errors.invalid("options.max_frame_age_seconds must be >= 0")
        return Options(policy=policy, max_age_s=opts.max_frame_age_seconds or self.settings.fifo_max_age_s,
                       max_queue=opts.max_queue or self.settings.fifo_max_queue)

    async def _decode(self, frame: pb.Frame, h264: H264Decoder | None) -> np.ndarray:
        kind = payload_kind(frame)
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            rgb = await loop.run_in_executor(self._decode_pool, decode_frame, frame, self.limits, h264)
        except DecodeError as exc:
            raise errors.invalid(str(exc)) from None
        except FrameTooLarge as exc:
            raise errors.exhausted(str(exc)) from None
        self.metrics.decode_seconds.labels(kind or "none").observe(time.perf_counter() - t0)
        return rgb

    def register(self, track: Track) -> None:
        self.tracks[track.track_id] = track
        self.tombstones.pop(track.track_id, None)
        self.metrics.active_tracks.set(len(self.tracks))

    async def start_track(self, req: pb.StartTrackRequest) -> tuple[str, pb.TrackResult]:
        if self.draining:
            raise errors.unavailable("server is draining; retry on another replica")
        track_id = req.track_id or uuid.uuid4().hex[:16]
        _check_id(track_id)
        if req.model and req.model not in (self.model_id, self.model_id.split("@")[0]):
            raise errors.invalid(f"model {req.model!r} is not served here; this server serves {self.model_id!r}")
        if track_id in self.tracks or track_id in self.reserved:
            raise errors.exists(f"track {track_id!r} already exists; stop it first or pick another id")
        self._check_capacity()
        options = self._options(req.options)
        box = [req.initial_box.x, req.initial_box.y, req.initial_box.width, req.initial_box.height]
        self.reserved.add(track_id)
        try:
            await self._check_not_in_redis(track_id)
            kind = req.WhichOneof("source")
            if kind == "first_frame":
                h264 = H264Decoder() if payload_kind(req.first_frame) == "h264" else None
                rgb = await self._decode(req.first_frame, h264)
                frame = PendingFrame(rgb=rgb, frame_number=0, pts=req.first_frame.pts,
                                     capture_time=_capture(req.first_frame), receive_time=time.time())
                track = await self.init_track(track_id, rgb, box, options, "push", dict(req.labels))
                track.h264 = h264
            elif kind == "rtsp":
                if self.pulled is None:
                    raise errors.ServiceError(grpc.StatusCode.UNIMPLEMENTED,
                                              "RTSP sources are not available on this server")
                track, frame = await self.pulled.start(track_id, req, box, options)
            else:
                raise errors.invalid("StartTrack needs a source: first_frame (push) or rtsp")
        finally:
            self.reserved.discard(track_id)
        self.register(track)
        result = self.make_result(track, frame, pb.TRACKING, track.state.box_xyxy, 1.0)
        track.last_result = result
        await self._persist_new(track)
        await fan_out(self.sinks, result)
        event("track_started", track_id=track_id, source=track.source, policy=options.policy,
              box=",".join(f"{v:.1f}" for v in box))
        return track_id, result

    async def _check_not_in_redis(self, track_id: str) -> None:
        if self.store is None or not self.redis_ok:
            return
        try:
            stored = await self.store.load(track_id)
        except StoreUnavailable:
            self._redis_down()
            return
        if stored is not None and stored.state.get("status") != "STOPPED":
            raise errors.exists(f"track {track_id!r} exists in Redis (another server, or a restart): push "
                                "frames to it to resume it, or stop it first")

    async def init_track(self, track_id: str, rgb: np.ndarray, box: list[float], options: Options,
                          source: str, labels: dict[str, str]) -> Track:
        try:
            (state,) = await self.executor.initialize([rgb], [box])
        except InvalidInput as exc:
            raise errors.invalid(str(exc)) from None
        return Track(track_id=track_id, state=state, model_id=self.model_id, options=options, source=source,
                     labels=labels, frame_size=(rgb.shape[1], rgb.shape[0]))

    async def _persist_new(self, track: Track) -> None:
        if self.store is None:
            return
        if not self.redis_ok:
            track.dirty = True
            return
        try:
            owner = await self.store.acquire_lease(track.track_id)
            if owner != self.store.owner:
                event("lease_conflict", 30, track_id=track.track_id, owner=owner)
            await self._save_full(track)
        except StoreUnavailable:
            self._redis_down()

    async def _track_for_push(self, track_id: str) -> Track:
        if self.draining:
            raise errors.unavailable("server is draining; retry on another replica")
        _check_id(track_id)
        track = self.tracks.get(track_id)
        if track is None:
            if track_id in self.tombstones:
                raise errors.precondition(f"track {track_id!r} was stopped; start a new track")
            track = await self._resume(track_id)
        if track.status != pb.TRACKING:
            raise errors.precondition(f"track {track_id!r} is {pb.TrackStatus.Name(track.status)}: {track.message}")
        if track.source != "push":
            raise errors.precondition(f"track {track_id!r} pulls its frames from {track.source}; it takes no pushes")
        return track

    async def _resume(self, track_id: str) -> Track:
        """Carry on a track this server does not hold, from its state in Redis."""
        if self.store is None:
            raise errors.not_found(f"no track {track_id!r}")
        # [lock, callers using it]: the entry goes when its last caller does (unknown ids must not pile up
        # locks). `lock.locked()` is no test for that: release() wakes the next waiter before it holds the
        # lock, and a lock dropped then would let a newcomer resume the same track beside that waiter.
        entry = self._resume_locks.setdefault(track_id, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                return await self._resume_locked(track_id)
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._resume_locks[track_id]

    async def _resume_locked(self, track_id: str) -> Track:
        assert self.store is not None
        if track_id in self.tracks:
            return self.tracks[track_id]
        try:
            stored = await self.store.load(track_id)
        except StoreUnavailable:
            self._redis_down()
            raise errors.unavailable(f"track {track_id!r} is not held by this server and Redis is "
                                     "unreachable; retry") from None
        if stored is None:
            raise errors.not_found(f"no track {track_id!r} (not on this server, not in Redis)")
        if stored.meta.get("source") != "push":
            raise errors.precondition(f"track {track_id!r} pulls from {stored.meta.get('source')}; it takes no "
                                      "pushes")
        track = track_from_stored(track_id, stored, self.model_id)
        self._check_capacity()
        try:
            owner = await self.store.acquire_lease(track_id)
        except StoreUnavailable:
            self._redis_down()
            raise errors.unavailable("Redis unreachable while taking the track's lease; retry") from None
        if owner != self.store.owner:
            raise errors.unavailable(f"track {track_id!r} is held by server {owner!r}; its lease lasts up to "
                                     f"{self.settings.lease_ttl_s}s after that server stops; retry there or later")
        self.register(track)
        event("track_resumed", track_id=track_id, frame=track.frames_received, owner=owner)
        return track

    async def push(self, track_id: str, frame: pb.Frame) -> asyncio.Future:
        """Decode and queue one frame; -> a future of its TrackResult (a result or a drop)."""
        track = await self._track_for_push(track_id)
        if payload_kind(frame) == "h264" and track.h264 is None:
            track.h264 = H264Decoder()
        receive = time.time()
        try:
            rgb = await self._decode(frame, track.h264)
            _check_size(track, rgb)
        except errors.ServiceError:
            self._count_drop(track, "decode_error")
            raise
        await track.wait_for_room()
        if self.draining:
            raise errors.unavailable("server is draining; retry on another replica")
        if track.status != pb.TRACKING:
            raise errors.precondition(f"track {track_id!r} was stopped while the frame waited")
        fut = asyncio.get_running_loop().create_future()
        pending = PendingFrame(rgb=rgb, frame_number=track.next_frame_number(), pts=frame.pts,
                               capture_time=_capture(frame), receive_time=receive, future=fut)
        self.scheduler.submit(track, pending)
        return fut

    async def stop_track(self, track_id: str) -> pb.TrackInfo:
        _check_id(track_id)
        track = self.tracks.get(track_id)
        if track is None:
            if track_id in self.tombstones:
                return self.tombstones[track_id]
            track = await self._resume(track_id)
        track.status = pb.STOPPED
        track.message = "stopped by StopTrack"
        self.scheduler.discard(track)
        while track.waiting:
            self._on_drop(track, track.waiting.popleft(), "stopped")
        track.room.set()
        if track.source_task is not None:
            track.source_task.cancel()
        if track.source_obj is not None:
            await track.source_obj.stop()
        result = self.make_result(track, None, pb.STOPPED, track.state.box_xyxy, 0.0, message=track.message)
        await fan_out(self.sinks, result)
        info = await self.retire(track, "stopped")
        event("track_stopped", track_id=track_id, frames=track.frames_processed)
        return info

    async def retire(self, track: Track, why: str) -> pb.TrackInfo:
        """A track that ended (stopped, or its source gave up): final state to Redis, lease released,
        out of memory; its TrackInfo stays answerable as a tombstone, its replay buffer as long as that."""
        if self.store is not None and self.redis_ok:
            try:
                await self._save_full(track)
                await self.store.release_lease(track.track_id)
            except StoreUnavailable:
                self._redis_down()
        self._evict(track, why)
        info = self.info(track)
        self.tombstones[track.track_id] = info
        while len(self.tombstones) > MAX_TOMBSTONES:
            forgotten, _ = self.tombstones.popitem(last=False)
            self.hub.forget(forgotten)
        return info

    def _evict(self, track: Track, why: str) -> None:
        self.tracks.pop(track.track_id, None)
        self.scheduler.discard(track)
        self.metrics.forget_track(track.track_id)
        self.metrics.active_tracks.set(len(self.tracks))
        if track.h264 is not None:
            track.h264.close()
        event("track_evicted", 10, track_id=track.track_id, why=why)

    def get_track(self, track_id: str) -> pb.TrackInfo:
        _check_id(track_id)
        track = self.tracks.get(track_id)
        if track is not None:
            return self.info(track)
        if track_id in self.tombstones:
            return self.tombstones[track_id]
        raise errors.not_found(f"no track {track_id!r} on this server")

    def list_tracks(self) -> list[pb.TrackInfo]:
        return [self.info(t) for t in self.tracks.values()]

    def info(self, track: Track) -> pb.TrackInfo:
        if track.source == "push":
            source_state = pb.SOURCE_PUSH if track.status == pb.TRACKING else pb.SOURCE_STOPPED
        else:
            name = getattr(getattr(track.source_obj, "state", None), "value", "stopped")
            source_state = {"connecting": pb.SOURCE_CONNECTING, "running": pb.SOURCE_RUNNING,
                            "reconnecting": pb.SOURCE_RECONNECTING, "failed": pb.SOURCE_FAILED,
                            }.get(name, pb.SOURCE_STOPPED)
        return pb.TrackInfo(
            track_id=track.track_id, status=track.status, source_state=source_state, source=track.source,
            model_id=track.model_id, options=track.options.to_proto(), last_result=track.last_result,
            frames_processed=track.frames_processed, frames_dropped=dict(track.dropped),
            created_time=_ts(track.created_time), owner=self.store.owner if self.store else "",
            message=track.message, labels=track.labels)


def _capture(frame: pb.Frame) -> float | None:
    if frame.HasField("capture_time"):
        return frame.capture_time.ToNanoseconds() / 1e9
    return None


def _check_size(track: Track, rgb: np.ndarray) -> None:
    """Boxes and crops are in the first frame's pixels: a pushed frame of another size is refused."""
    size = (rgb.shape[1], rgb.shape[0])
    if track.frame_size is None:  # resumed from state written before frame sizes were stored
        track.frame_size = size
    elif size != track.frame_size:
        raise errors.invalid(f"frame is {size[0]}x{size[1]} but track {track.track_id!r} started on "
                             f"{track.frame_size[0]}x{track.frame_size[1]} frames; resize it, or start a new "
                             "track for the new size")


def _check_id(track_id: str) -> None:
    if not TRACK_ID_RE.match(track_id):
        raise errors.invalid(f"track_id {track_id[:200]!r}: use 1-128 characters from [A-Za-z0-9_.-]")
