"""Pulled tracks: a `FrameSource` (RTSP) feeds the same per-track slot as PushFrame.

Start (initialise on the first frame with pts >= init_pts), pump frames into the scheduler, publish source
state changes, and adopt pulled tracks whose owner died (nobody pushes to them, so nothing else would
bring them back).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lorat.v1 import tracker_pb2 as pb

from . import errors
from .log import event
from .publishing.base import fan_out
from .sources.base import FrameSource
from .sources.rtsp import redact_url
from .state.restore import track_from_stored
from .tracks import Options, PendingFrame, Track

if TYPE_CHECKING:
    from .core import TrackManager


class PulledSources:
    """The manager's pulled-track half; `factory(url, options, track_id=, on_state_change=)` makes sources."""

    def __init__(self, manager: TrackManager, factory: Callable[..., FrameSource]) -> None:
        self.manager = manager
        self.factory = factory

    def open(self, track_id: str, url: str, options: dict[str, str], holder: dict[str, Any]) -> FrameSource:
        """A source whose state changes become results (RECONNECTING, ...) once `holder` has the track;
        before that, a first attempt that fails resolves `holder["failed"]` (a future) with its reason."""
        m = self.manager

        async def on_state(old: object, new: object, reason: str) -> None:
            name = getattr(new, "value", str(new))
            event("source_state", track_id=track_id, state=name, reason=reason)
            track = holder.get("track")
            failed = holder.get("failed")
            if track is None and failed is not None and not failed.done() and name in ("reconnecting", "failed"):
                failed.set_result(reason)
            status = {"reconnecting": pb.RECONNECTING, "running": pb.TRACKING}.get(name)
            if track is None or status is None or track.status != pb.TRACKING:
                return
            await fan_out(m.sinks, m.make_result(track, None, status, track.state.box_xyxy, 0.0, message=reason))

        assert self.factory is not None
        try:
            return self.factory(url, options, track_id=track_id, on_state_change=on_state)
        except ValueError as exc:
            raise errors.invalid(str(exc)) from None

    async def start(self, track_id: str, req: pb.StartTrackRequest, box: list[float],
                    options: Options) -> tuple[Track, PendingFrame]:
        """Open the source, initialise on its first frame with pts >= init_pts, then pump frames."""
        m = self.manager
        holder: dict[str, Any] = {"failed": asyncio.get_running_loop().create_future()}
        source = self.open(track_id, req.rtsp.url, dict(req.rtsp.options), holder)
        frames = source.frames().__aiter__()
        try:
            first = await self._first_frame(frames, holder["failed"], req)
            frame = PendingFrame(rgb=first.rgb, frame_number=0, pts=first.pts, capture_time=first.capture_time,
                                 receive_time=first.receive_time or time.time())
            track = await m.init_track(track_id, first.rgb, box, options, redact_url(req.rtsp.url),
                                       dict(req.labels))
        except BaseException:  # a bad box, an engine error, or the caller gone (cancelled): no orphan source
            await source.stop()  # idempotent
            raise
        track.pull = {"url": req.rtsp.url, "options": dict(req.rtsp.options)}
        track.source_obj = source
        holder["track"] = track
        track.source_task = asyncio.create_task(self.pump(track, frames), name=f"pump {track_id}")
        return track, frame

    async def _first_frame(self, frames: Any, failed: asyncio.Future, req: pb.StartTrackRequest) -> Any:
        """The first frame with pts >= init_pts; a failed first attempt (refused, 401, 404, open deadline)
        answers at once with its reason instead of waiting out --rtsp-start-timeout-s."""
        loop = asyncio.get_running_loop()
        timeout = self.manager.settings.rtsp_start_timeout_s
        deadline = loop.time() + timeout
        while True:
            nxt = asyncio.ensure_future(frames.__anext__())
            done, _ = await asyncio.wait({nxt, failed}, timeout=max(0.0, deadline - loop.time()),
                                         return_when=asyncio.FIRST_COMPLETED)
            try:
                if nxt in done:
                    first = nxt.result()
                    if first.pts >= req.rtsp.init_pts:
                        return first
                    continue
                reason = failed.result() if failed.done() else f"no frame within {timeout:g}s (--rtsp-start-timeout-s)"
            except StopAsyncIteration:
                reason = failed.result() if failed.done() else "the source ended before its first frame"
            nxt.cancel()
            raise errors.unavailable(f"RTSP start failed ({start_failure_kind(reason)}) for "
                                     f"{redact_url(req.rtsp.url)}: {_redact_all(reason, req.rtsp.url)}")

    async def adopt(self) -> None:
        """Take over pulled (RTSP) tracks whose owner is gone: nobody pushes to them, so nothing else would
        bring them back. Reopens the source and goes on from the stored state."""
        m = self.manager
        assert m.store is not None
        if self.factory is None or m.draining:
            return
        for track_id in await m.store.track_ids():
            if track_id in m.tracks or track_id in m.reserved or track_id in m.tombstones:
                continue
            if len(m.tracks) + len(m.reserved) >= m.settings.max_tracks:
                return
            if await m.store.lease_owner(track_id) is not None:
                continue
            stored = await m.store.load(track_id)
            if stored is None or not stored.meta.get("pull") or stored.state.get("status") != "TRACKING":
                continue
            try:
                track = track_from_stored(track_id, stored, m.model_id)
            except errors.ServiceError as exc:
                event("adopt_skipped", 30, track_id=track_id, why=exc.message)
                continue
            if await m.store.acquire_lease(track_id) != m.store.owner:
                continue
            holder = {"track": track}
            try:
                source = self.open(track_id, track.pull["url"], track.pull.get("options", {}), holder)
            except errors.ServiceError as exc:
                event("adopt_failed", 40, track_id=track_id, why=exc.message)
                await m.store.release_lease(track_id)
                continue
            track.source_obj = source
            track.source_task = asyncio.create_task(self.pump(track, source.frames().__aiter__()),
                                                    name=f"pump {track_id}")
            m.register(track)
            event("track_adopted", track_id=track_id, source=track.source, frame=track.frames_received)

    async def pump(self, track: Track, frames: Any) -> None:
        """Feed a pulled source's frames into the track's slot (results go to sinks only)."""
        m = self.manager
        try:
            async for f in frames:
                if track.status != pb.TRACKING:
                    break
                m.scheduler.submit(track, PendingFrame(
                    rgb=f.rgb, frame_number=track.next_frame_number(), pts=f.pts, capture_time=f.capture_time,
                    receive_time=f.receive_time or time.time()))
        except asyncio.CancelledError:
            return
        except Exception as exc:
            event("source_error", 40, track_id=track.track_id, error=repr(exc))
        if track.status == pb.TRACKING and not m.draining:
            state = getattr(track.source_obj.state, "value", str(track.source_obj.state))
            track.status = pb.FAILED if state == "failed" else pb.STOPPED
            track.message = f"source ended ({state})"
            result = m.make_result(track, None, track.status, track.state.box_xyxy, 0.0, message=track.message)
            await fan_out(m.sinks, result)
            event("source_ended", 30, track_id=track.track_id, state=state)
            # Nothing will feed this track again: free its slot and lease instead of renewing them forever.
            await m.retire(track, f"source {state}")


def start_failure_kind(reason: str) -> str:
    """refused | unauthorised | not found | timeout | error, from FFmpeg's message."""
    low = reason.lower()
    for kind, words in (("refused", ("refused",)), ("unauthorised", ("401", "unauthorized", "authoriz")),
                        ("not found", ("404", "not found", "no such")),
                        ("timeout", ("timed out", "timeout", "deadline", "no frame within"))):
        if any(w in low for w in words):
            return kind
    return "error"


def _redact_all(text: str, url: str) -> str:
    """FFmpeg quotes the URL it was given: never echo its credentials."""
    return text.replace(url, redact_url(url)) if url else text
