"""TrackManager: the service without gRPC -- it composes the parts and answers the API's calls.

    registry.py     held tracks and the one `end(track, status, reason)` path
    engine_loop.py  plan a batch, run it on its model's executor
    commit.py       fenced state write of batch k while batch k+1 runs; results released after the write
    leases.py       the one task that renews, re-takes and gives up leases
    pulled.py       the sources' supervisor, behind `SourcePort` (this class implements it)
    health.py       readiness, liveness, Redis degradation; exit when the engine dies or hangs
    limits.py / urlpolicy.py   request checks and caps; what a source may open; redaction

Every public method raises `ServiceError` (a gRPC status code and a message) for caller mistakes; no bad
input reaches the engine or another track.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
from lorat.v1 import tracker_pb2 as pb

from lorat_infer import InvalidInput

from . import convert, errors, idempotency, limits
from .commit import Committer, FrameObserver, Outputs
from .decode import DecodeError, FrameLimits, FrameTooLarge, H264Decoder, decode_frame, payload_kind
from .engine_loop import EngineLoop, Plan
from .health import HealthState, Supervisor
from .leases import LeaseKeeper
from .log import event
from .metrics import Metrics
from .publishing.base import ResultSink, WatchHub, fan_out
from .pulled import PulledSources
from .registry import TrackRegistry
from .settings import Settings
from .sources.base import FrameSource
from .state import adapter
from .state.restore import track_from_stored
from .state.store import RENEW_LOST, RedisStateStore, StoreUnavailable
from .tracks import Options, PendingFrame, Track


class TrackManager:
    def __init__(self, settings: Settings, executor: Any, model_id: str, metrics: Metrics,
                 store: RedisStateStore | None, sinks: list[ResultSink] | None = None,
                 source_factory: Callable[..., FrameSource] | None = None,
                 executors: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.model_id = model_id  # the default model (a request that names none gets it)
        self.executors: dict[str, Any] = executors or {model_id: executor}
        self.executor = self.executors[model_id]
        self.metrics = metrics
        self.store = store
        self.hub = WatchHub(settings.replay_results)
        self.sinks: list[ResultSink] = [self.hub, *(sinks or [])]
        self.limits = FrameLimits(settings.max_frame_width, settings.max_frame_height)
        self.draining = False
        self.health: HealthState | None = None
        max_batch, preferred_batch = settings.batch_limits()
        self.loop = EngineLoop(self.executors, max_batch_size=max_batch, preferred_batch_size=preferred_batch,
                               max_wait_s=settings.max_batch_wait_ms / 1000, on_drop=self._on_drop,
                               on_outputs=self._on_outputs, on_fail=self._on_fail)
        self.registry = TrackRegistry(metrics=metrics, hub=self.hub, store=store, publish=self.publish,
                                      discard=self.loop.discard)
        self.committer = Committer(store=store, registry=self.registry, metrics=metrics, publish=self.publish,
                                   on_redis=self._redis_state, kick_keeper=self._kick_keeper)
        # (track id, frame pixels, result) after each tracked frame is released, on the loop: must be cheap
        # (the console keeps the latest frame per open view and encodes elsewhere). Empty: no cost.
        self.frame_observers: list[FrameObserver] = self.committer.observers
        self.keeper: LeaseKeeper | None = None
        self.pulled = PulledSources(self, source_factory, settings) if source_factory is not None else None
        self.placement: Any = None  # camera-track index and placement (server/placement.py), set by the app
        self._decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="lorat-decode")
        # Per model: nvJPEG into its engine's GPU memory when the engine is on CUDA, else None (CPU decoding
        # in the pool above; the executor logs why once).
        self._gpu_jpeg = {mid: getattr(ex, "jpeg_decoder", lambda: None)() for mid, ex in self.executors.items()}
        self._decoding = 0
        self._resume_locks: dict[str, list] = {}  # track id -> [asyncio.Lock, callers]
        self._tasks: list[asyncio.Task] = []

    # -- views used by the API and the console ------------------------------------------------------------

    @property
    def tracks(self) -> dict[str, Track]:
        return self.registry.tracks

    @property
    def scheduler(self) -> EngineLoop:
        return self.loop

    def model_ids(self) -> tuple[str, ...]:
        return tuple(self.executors)

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self, health: HealthState | None = None) -> None:
        self.health = health
        self._tasks.append(asyncio.create_task(self.loop.run(), name="engine-loop"))
        self._tasks.append(asyncio.create_task(self.committer.run(), name="committer"))
        if self.store is not None:
            self.keeper = LeaseKeeper(self.store, self.registry, lease_ttl_s=self.settings.lease_ttl_s,
                                      on_redis=self._redis_state, on_latency=self._redis_latency,
                                      periodic=self._periodic, periodic_every_s=max(1.0, self.settings.lease_ttl_s / 2))
            self._tasks.append(asyncio.create_task(self.keeper.run(), name="lease-keeper"))
        if self.settings.track_idle_timeout_s > 0:
            self._tasks.append(asyncio.create_task(self._expire_idle(), name="idle-expiry"))
        bound_malloc()
        self._tasks.append(asyncio.create_task(_return_freed_memory(), name="malloc-trim"))
        if health is not None:
            self.registry.on_change = lambda: health.set_full(self._full())
            supervised = [t for t in self._tasks if t.get_name() in ("engine-loop", "committer", "lease-keeper")]
            sup = Supervisor(health, tasks=lambda: supervised, oldest_wait=self.loop.oldest_wait,
                             last_progress=lambda: self.loop.last_progress, stall_s=self.settings.engine_stall_s,
                             grace_s=self.settings.liveness_grace_s, full=self._full)
            self._tasks.append(asyncio.create_task(sup.run(), name="supervisor"))

    async def drain(self) -> None:
        """SIGTERM path: refuse new work, finish what is queued, write every track, hand the leases back."""
        self.draining = True
        event("draining", tracks=len(self.registry), pending=self.loop.pending())
        for track in list(self.registry.tracks.values()):
            if track.source_task is not None:
                track.source_task.cancel()
            if track.source_obj is not None:
                await track.source_obj.stop()
        self.loop.stop()  # queued frames run now, without waiting for fuller batches
        ends = time.monotonic() + self.settings.drain_timeout_s  # one budget for both waits
        try:
            await asyncio.wait_for(self.loop.wait_idle(), self.settings.drain_timeout_s)
            await asyncio.wait_for(self.committer.wait_idle(), max(0.5, ends - time.monotonic()))
        except asyncio.TimeoutError:
            event("drain_timeout", 30, pending=self.loop.pending(), held=self.committer.held_frames)
        for task in self._tasks:
            if task.get_name() != "committer":
                task.cancel()
        for track in list(self.registry.tracks.values()):
            await self.registry.end(track, pb.STOPPED, "server draining: the track continues on another server",
                                    handoff=True)
        for task in self._tasks:
            task.cancel()
        if self.store is not None:
            await self.store.close()
        self._decode_pool.shutdown(wait=False)
        event("drained")

    # -- SourcePort (server/pulled.py) and the frame path ------------------------------------------------

    def submit(self, track: Track, frame: PendingFrame) -> None:
        self.loop.submit(track, frame)

    async def publish(self, result: pb.TrackResult) -> None:
        await fan_out(self.sinks, result)

    async def ended(self, track: Track, status: int, reason: str) -> None:
        await self.registry.end(track, status, reason)

    def register(self, track: Track) -> None:
        self.registry.add(track)

    def _on_drop(self, track: Track, frame: PendingFrame, reason: str) -> None:
        self.registry.answer_dropped(track, frame, reason)
        event("frame_dropped", 10, track_id=track.track_id, frame=frame.frame_number, reason=reason)

    def _on_fail(self, plan: Plan, exc: BaseException) -> None:
        for track, frame in zip(plan.tracks, plan.frames):
            self.registry.answer_dropped(track, frame, "internal_error", message=type(exc).__name__)

    def _on_outputs(self, plan: Plan, pairs: list, seconds: float) -> None:
        """Apply a batch's new states in memory and queue its results for the committer (no waiting)."""
        now_mono = time.monotonic()
        self.metrics.batch_size.observe(len(plan.tracks))
        self.metrics.batch_forward_seconds.observe(seconds)
        outputs = Outputs(items=[])
        keep_pixels = bool(self.frame_observers)
        for track, frame, (new_state, res) in zip(plan.tracks, plan.frames, pairs):
            self.metrics.queue_wait_seconds.observe(max(0.0, now_mono - seconds - frame.enqueued))
            if not keep_pixels:
                frame.rgb = None  # the pixels are done with; results may wait for Redis a while
            if track.ended:  # stopped or moved while its frame was computed
                if track.status == pb.MOVED:
                    self.registry.answer_moved(track, frame)
                else:
                    self.registry.answer_dropped(track, frame, "stopped", message=track.message)
                continue
            if adapter.template_fingerprint(new_state) != track.template_fp:
                track.template_fp = adapter.template_fingerprint(new_state)
                track.needs_full = True
            replaced = getattr(new_state, "online_updates", 0) - getattr(track.state, "online_updates", 0)
            if replaced > 0:  # MixFormerV2 swapped in a new online template
                self.metrics.online_template_updates.labels(track.model_id).inc(replaced)
            track.state = new_state
            track.frames_processed += 1
            self.metrics.processed(track.track_id)
            score = float(res.score)
            result = convert.result(track, frame, self._lost_or_tracking(track, score), res.box_xyxy, score)
            outputs.items.append((track, frame, result))
            track.last_result = result  # the counters below carry its frame number
            track.last_push_id = frame.push_id  # and the id of the push it answers (server/idempotency.py)
            outputs.states[track.track_id] = (track, track.epoch, adapter.encode_state(new_state, track.counters()),
                                              "TRACKING")
        if outputs.items:
            self.committer.submit(outputs)

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

    # -- Redis health, leases, housekeeping ---------------------------------------------------------------

    def _redis_state(self, up: bool) -> None:
        if self.health is not None:
            self.health.redis(up)

    def _redis_latency(self, p99: float | None) -> None:
        if self.health is not None:
            self.health.redis_latency(p99)

    def _kick_keeper(self) -> None:
        if self.keeper is not None:
            self.keeper.kick()

    async def _periodic(self) -> None:
        """Every few seconds, from the lease keeper: lease tracks started while Redis was away; adopt."""
        assert self.store is not None
        for track in [t for t in self.registry.tracks.values() if not t.epoch and not t.ended]:
            claim = await self.store.claim(track.track_id)
            if not claim.ok:
                track.mark_moved(claim.holder or "another server")
                await self.ended(track, pb.MOVED, track.message)
                continue
            track.epoch = claim.epoch
            await self._persist_full(track)
        if self.pulled is not None:
            await self.pulled.adopt()

    async def _expire_idle(self) -> None:
        timeout = self.settings.track_idle_timeout_s
        while True:
            await asyncio.sleep(max(0.05, min(1.0, timeout / 4)))
            now = time.monotonic()
            for track in list(self.registry.tracks.values()):
                if (track.source == "push" and not track.ended and not track.in_flight and not track.waiting
                        and now - track.last_activity > timeout):
                    await self.ended(track, pb.STOPPED, f"idle: no frame for {timeout:g}s (--track-idle-timeout-s)")

    async def orphans(self) -> list[str]:
        assert self.store is not None
        if self.placement is not None:  # this replica's share, from the index (server/placement.py)
            held = {t.track_id: t.epoch for t in self.registry.tracks.values() if t.pull and t.epoch and not t.ended}
            return await self.placement.orphans(held, self.registry.reserved,
                                                len(self.registry) + len(self.registry.reserved))
        return [tid for tid in await self.store.track_ids()
                if tid not in self.registry.tracks and tid not in self.registry.reserved]

    async def take_over(self, track_id: str) -> Track | None:
        """A stored pulled track with no owner, leased to us and restored (None: not one to adopt)."""
        assert self.store is not None
        if self._full():
            return None
        stored = await self.store.load(track_id)
        if stored is None or not stored.meta.get("pull") or stored.status != "TRACKING":
            if self.placement is not None:
                await self.placement.stale(track_id)
            return None
        try:
            track = track_from_stored(track_id, stored, self.model_ids())
        except errors.ServiceError as exc:
            event("adopt_skipped", 30, track_id=track_id, why=exc.message)
            return None
        claim = await self.store.acquire(track_id)
        if not claim.ok:
            return None
        track.epoch = claim.epoch
        track.template_fp = adapter.template_fingerprint(track.state)
        if self.placement is not None:
            await self.placement.adopted(track_id, claim.epoch)
        return track

    async def _persist_full(self, track: Track) -> None:
        """Write everything about a track (fenced); Redis away: the committer/keeper do it later."""
        if self.store is None or not track.epoch:
            return
        try:
            for _attempt in range(2):
                holder = await self.store.save_full(
                    track.track_id, track.epoch, track.meta_dict(),
                    adapter.encode_state(track.state, track.counters()), "TRACKING",
                    await asyncio.to_thread(adapter.encode_template, track.state, track.model_id))
                if holder != "?":
                    break
                # Our lease lapsed (a slow RTSP start, an outage): re-take it if no other epoch came since.
                (code, holder), = (await self.store.renew([(track.track_id, track.epoch)])).values()
                if code == RENEW_LOST:
                    holder = holder or "another server"
                    break
        except StoreUnavailable:
            self._redis_state(False)
            return
        if holder and holder != "?":
            track.mark_moved(holder)
            await self.ended(track, pb.MOVED, track.message)
        elif not holder:
            track.needs_full = False

    # -- tracks --------------------------------------------------------------------------------------------

    def _full(self) -> bool:
        return len(self.registry) + len(self.registry.reserved) >= self.settings.max_tracks

    def _check_capacity(self) -> None:
        if self._full():
            self.metrics.requests_refused.labels("max_tracks").inc()
            raise errors.exhausted(f"this server holds its maximum of {self.settings.max_tracks} tracks "
                                   "(--max-tracks); stop a track or use another replica")

    def _model_for(self, name: str) -> str:
        limits.check_model_name(name)
        if not name:
            return self.model_id
        for mid in self.executors:
            if name in (mid, mid.split("@")[0]):
                return mid
        raise errors.invalid(f"model {limits.short(name)} is not served here; this server serves "
                             f"{', '.join(self.executors)}")

    async def _decode(self, frame: pb.Frame, h264: H264Decoder | None, model_id: str | None = None) -> np.ndarray:
        if self._decoding >= self.settings.max_pending_decodes:
            self.metrics.requests_refused.labels("max_pending_decodes").inc()
            raise errors.exhausted(f"{self._decoding} frames are being decoded already "
                                   "(--max-pending-decodes); retry shortly")
        kind = payload_kind(frame)
        t0 = time.perf_counter()
        self._decoding += 1
        try:
            rgb = await asyncio.get_running_loop().run_in_executor(
                self._decode_pool, decode_frame, frame, self.limits, h264,
                self._gpu_jpeg.get(model_id or self.model_id))
        except DecodeError as exc:
            raise errors.invalid(str(exc)) from None
        except FrameTooLarge as exc:
            raise errors.exhausted(str(exc)) from None
        finally:
            self._decoding -= 1
        self.metrics.decode_seconds.labels(kind or "none").observe(time.perf_counter() - t0)
        return rgb

    async def start_track(self, req: pb.StartTrackRequest) -> tuple[str, pb.TrackResult]:
        if self.draining:
            raise errors.unavailable("server is draining; retry on another replica")
        track_id = limits.check_id(req.track_id) if req.track_id else uuid.uuid4().hex[:16]
        model_id = self._model_for(req.model)
        if track_id in self.registry.tracks or track_id in self.registry.reserved:
            raise errors.exists(f"track {track_id!r} already exists; stop it first or pick another id")
        self._check_capacity()
        # cheap checks first, the labels copy last: nothing is decoded, opened or copied for a bad request
        options = limits.options(req.options, self.settings)
        box = limits.check_box(req.initial_box)
        kind = req.WhichOneof("source")
        if kind == "first_frame":
            limits.check_capture_time(req.first_frame)
        elif kind == "rtsp":
            if self.pulled is None:
                raise errors.ServiceError(grpc.StatusCode.UNIMPLEMENTED, "RTSP sources are not available here")
            self.pulled.check(req.rtsp.url, dict(req.rtsp.options))
        else:
            raise errors.invalid("StartTrack needs a source: first_frame (push) or rtsp")
        labels = limits.check_labels(req.labels, self.settings)
        self.registry.reserved.add(track_id)
        epoch = 0
        try:
            epoch = await self._claim(track_id)
            if epoch:
                self.registry.claims[track_id] = epoch  # the lease keeper renews it during a long start
            if kind == "first_frame":
                h264 = H264Decoder() if payload_kind(req.first_frame) == "h264" else None
                rgb = await self._decode(req.first_frame, h264, model_id)
                frame = PendingFrame(rgb=rgb, frame_number=0, pts=req.first_frame.pts,
                                     capture_time=convert.capture_time(req.first_frame), receive_time=time.time())
                track = await self.init_track(track_id, rgb, box, options, "push", labels, model_id)
                track.h264 = h264
            else:
                assert self.pulled is not None
                track, frame = await self.pulled.start(track_id, req, box, options, labels)
        except BaseException:
            if epoch and self.store is not None:  # give the claim back: the id stays free
                with contextlib.suppress(StoreUnavailable):
                    await self.store.end(track_id, epoch, None, "STOPPED")
            raise
        finally:
            self.registry.reserved.discard(track_id)
            self.registry.claims.pop(track_id, None)
        track.epoch = epoch
        self.registry.add(track)
        result = convert.result(track, frame, pb.TRACKING, track.state.box_xyxy, 1.0)
        track.last_result = result
        await self._persist_full(track)
        if track.pull is not None and epoch and self.placement is not None:
            await self.placement.indexed(track_id, epoch)
        await self.publish(result)
        event("track_started", track_id=track_id, source=track.source, policy=options.policy, epoch=epoch,
              box=",".join(f"{v:.1f}" for v in box))
        return track_id, result

    async def _claim(self, track_id: str) -> int:
        """Our lease on a new id (atomic across replicas); 0 while Redis is away (the keeper claims later)."""
        if self.store is None:
            return 0
        try:
            claim = await self.store.claim(track_id)
        except StoreUnavailable:
            self._redis_state(False)
            return 0
        if not claim.ok:
            where = f"held by server {claim.holder!r}" if claim.holder else "live in Redis (its owner is gone)"
            raise errors.exists(f"track {track_id!r} exists ({where}): push frames to it to resume it, or "
                                "stop it first")
        return claim.epoch

    async def init_track(self, track_id: str, rgb: np.ndarray, box: list[float], options: Options,
                         source: str, labels: dict[str, str], model_id: str | None = None) -> Track:
        model_id = model_id or self.model_id
        try:
            (state,) = await self.executors[model_id].initialize([rgb], [box])
        except InvalidInput as exc:
            raise errors.invalid(str(exc)) from None
        return Track(track_id=track_id, state=state, model_id=model_id, options=options, source=source,
                     labels=labels, frame_size=(rgb.shape[1], rgb.shape[0]),
                     template_fp=adapter.template_fingerprint(state))

    async def _track_for_push(self, track_id: str) -> Track:
        if self.draining:
            raise errors.unavailable("server is draining; retry on another replica")
        limits.check_id(track_id)
        track = self.registry.tracks.get(track_id)
        if track is None:
            tomb = self.registry.tombstone(track_id)
            if tomb is not None and tomb.status == pb.MOVED:
                raise errors.unavailable(tomb.message)
            if tomb is not None:
                raise errors.precondition(f"track {track_id!r} is {pb.TrackStatus.Name(tomb.status)} "
                                          f"({tomb.message}); start a new track")
            track = await self._resume(track_id)
        self._check_live(track)
        if track.source != "push":
            raise errors.precondition(f"track {track_id!r} pulls its frames from {track.source}; it takes no pushes")
        return track

    @staticmethod
    def _check_live(track: Track) -> None:
        if track.ended and track.status == pb.MOVED:
            raise errors.unavailable(track.message)
        if track.ended:
            raise errors.precondition(f"track {track.track_id!r} is {pb.TrackStatus.Name(track.status)}: "
                                      f"{track.message}")

    async def _resume(self, track_id: str) -> Track:
        """Carry on a track this server does not hold, from its state in Redis."""
        if self.store is None:
            raise errors.not_found(f"no track {track_id!r}")
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
        if track_id in self.registry.tracks:
            return self.registry.tracks[track_id]
        try:
            stored = await self.store.load(track_id)
        except StoreUnavailable:
            self._redis_state(False)
            raise errors.unavailable(f"track {track_id!r} is not held by this server and Redis is "
                                     "unreachable; retry") from None
        if stored is None:
            raise errors.not_found(f"no track {track_id!r} (not on this server, not in Redis)")
        if stored.meta.get("source") != "push":
            raise errors.precondition(f"track {track_id!r} pulls from {stored.meta.get('source')}; it takes no "
                                      "pushes")
        track = track_from_stored(track_id, stored, self.model_ids())
        self._check_capacity()
        try:
            claim = await self.store.acquire(track_id)
        except StoreUnavailable:
            self._redis_state(False)
            raise errors.unavailable("Redis unreachable while taking the track's lease; retry") from None
        if not claim.ok:
            raise errors.unavailable(f"track {track_id!r} is held by server {claim.holder!r}; its lease lasts up "
                                     f"to {self.settings.lease_ttl_s:g}s after that server stops; retry there or later")
        track.epoch = claim.epoch
        track.template_fp = adapter.template_fingerprint(track.state)
        self.registry.add(track)
        event("track_resumed", track_id=track_id, frame=track.frames_received, epoch=claim.epoch)
        return track

    async def push(self, track_id: str, frame: pb.Frame, push_id: str = "") -> asyncio.Future:
        """Decode and queue one frame; -> a future of its TrackResult (a result or a drop). A `push_id` seen
        before is answered with what that push got (server/idempotency.py)."""
        limits.check_capture_time(frame)
        track = await self._track_for_push(track_id)
        again = idempotency.retried(track, push_id)
        if again is not None:
            return again
        track.last_activity = time.monotonic()
        if payload_kind(frame) == "h264" and track.h264 is None:
            track.h264 = H264Decoder()
        receive = time.time()
        try:
            rgb = await self._decode(frame, track.h264, track.model_id)
            _check_size(track, rgb)
        except errors.ServiceError:
            track.dropped["decode_error"] += 1
            self.metrics.dropped(track.track_id, "decode_error")
            raise
        await track.wait_for_room()
        if self.draining:
            raise errors.unavailable("server is draining; retry on another replica")
        self._check_live(track)
        fut = asyncio.get_running_loop().create_future()
        track.last_activity = time.monotonic()
        pending = PendingFrame(rgb=rgb, frame_number=track.next_frame_number(), pts=frame.pts,
                               capture_time=convert.capture_time(frame), receive_time=receive, future=fut,
                               push_id=push_id)
        idempotency.remember(track, push_id, fut)
        self.loop.submit(track, pending)
        return fut

    async def stop_track(self, track_id: str) -> pb.TrackInfo:
        limits.check_id(track_id)
        track = self.registry.tracks.get(track_id)
        if track is None:
            tomb = self.registry.tombstone(track_id)
            if tomb is not None:
                return tomb
            track = await self._resume(track_id)
        return await self.registry.end(track, pb.STOPPED, "stopped by StopTrack")

    def get_track(self, track_id: str) -> pb.TrackInfo:
        limits.check_id(track_id)
        track = self.registry.tracks.get(track_id)
        if track is not None:
            return self.info(track)
        tomb = self.registry.tombstone(track_id)
        if tomb is not None:
            return tomb
        raise errors.not_found(f"no track {track_id!r} on this server")

    def list_tracks(self) -> list[pb.TrackInfo]:
        return [self.info(t) for t in self.registry.tracks.values()]

    def info(self, track: Track) -> pb.TrackInfo:
        return convert.info(track, self.registry.owner)


def _check_size(track: Track, rgb: np.ndarray) -> None:
    """Boxes and crops are in the first frame's pixels: a pushed frame of another size is refused."""
    size = (rgb.shape[1], rgb.shape[0])
    if track.frame_size is None:  # resumed from state written before frame sizes were stored
        track.frame_size = size
    elif size != track.frame_size:
        raise errors.invalid(f"frame is {size[0]}x{size[1]} but track {track.track_id!r} started on "
                             f"{track.frame_size[0]}x{track.frame_size[1]} frames; resize it, or start a new "
                             "track for the new size")


M_MMAP_THRESHOLD = -3


def bound_malloc(mmap_threshold: int = 32 * 1024) -> None:
    """Keep a burst of abusive requests from leaving the heap fragmented (docs/service.md, Limits).
    Blocks over `mmap_threshold` are always served by mmap and so go back to the OS when freed: glibc
    otherwise raises this threshold each time a large block is freed (up to 32 MiB), after which a caller's
    1 MiB label maps, 20,000-character names and request buffers land in the heap and pin it (measured:
    the heap's growth over the fuzz of bench/faults.py fell from 46 to 12-18 MiB). Set once at start-up;
    a no-op where there is no glibc. The arena cap that goes with it is set earlier, before any thread
    starts (server/malloc.py)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, mmap_threshold)


async def _return_freed_memory(every_s: float = 10.0) -> None:
    """Hand freed heap back to the OS now and then (glibc keeps it after bursts of large requests, so RSS
    would only ever grow). No-op where there is no glibc."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    while True:
        await asyncio.sleep(every_s)
        await asyncio.to_thread(trim, 0)
