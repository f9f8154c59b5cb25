"""The sources' supervisor: pulled tracks (RTSP) feed the same per-track slot as PushFrame.

It talks to the rest of the server only through `SourcePort` (submit a frame, publish a result, make a
track, take a stored track over, end a track) -- it never reaches into the manager. Start: validate the
URL and options (`urlpolicy`), open the source, initialise on its first frame with pts >= init_pts (a
failed first attempt answers at once with its reason), then pump frames. Adoption: pulled tracks whose
owner is gone are taken over (nobody pushes to them, so nothing else would bring them back).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from lorat.v1 import tracker_pb2 as pb

from . import convert, errors
from .log import event
from .settings import Settings
from .sources.base import FrameSource
from .tracks import Options, PendingFrame, Track
from .urlpolicy import SourceRefused, check_source, redact, redact_url


class SourcePort(Protocol):
    """What the supervisor may ask of the server."""

    draining: bool

    def submit(self, track: Track, frame: PendingFrame) -> None: ...

    async def publish(self, result: pb.TrackResult) -> None: ...

    async def init_track(self, track_id: str, rgb: Any, box: list[float], options: Options, source: str,
                         labels: dict[str, str]) -> Track: ...

    async def ended(self, track: Track, status: int, reason: str) -> None: ...

    async def orphans(self) -> list[str]: ...

    async def take_over(self, track_id: str) -> Track | None: ...

    def register(self, track: Track) -> None: ...


class PulledSources:
    """`factory(url, options, track_id=, on_state_change=, max_pixels=)` makes sources."""

    def __init__(self, port: SourcePort, factory: Callable[..., FrameSource], settings: Settings) -> None:
        self.port = port
        self.factory = factory
        self.settings = settings

    def check(self, url: str, options: dict[str, str]) -> dict[str, str]:
        try:
            return check_source(url, options, self.settings.schemes())
        except SourceRefused as exc:
            raise errors.invalid(str(exc)) from None

    def open(self, track_id: str, url: str, options: dict[str, str], holder: dict[str, Any]) -> FrameSource:
        """A source whose state changes become results (RECONNECTING, ...) once `holder` has the track;
        before that, a first attempt that fails resolves `holder["failed"]` (a future) with its reason."""
        port = self.port

        async def on_state(old: object, new: object, reason: str) -> None:
            name = getattr(new, "value", str(new))
            reason = redact(reason)
            event("source_state", track_id=track_id, state=name, reason=reason)
            track = holder.get("track")
            failed = holder.get("failed")
            if track is None and failed is not None and not failed.done() and name in ("reconnecting", "failed"):
                failed.set_result(reason)
            status = {"reconnecting": pb.RECONNECTING, "running": pb.TRACKING}.get(name)
            if track is None or status is None or track.ended:
                return
            await port.publish(convert.result(track, None, status, track.state.box_xyxy, 0.0, message=reason))

        limit = self.settings.max_frame_width * self.settings.max_frame_height
        try:
            return self.factory(url, options, track_id=track_id, on_state_change=on_state, max_pixels=limit)
        except ValueError as exc:
            raise errors.invalid(redact(str(exc))) from None

    async def start(self, track_id: str, req: pb.StartTrackRequest, box: list[float],
                    options: Options, labels: dict[str, str]) -> tuple[Track, PendingFrame]:
        """Open the source, initialise on its first frame with pts >= init_pts, then pump frames."""
        source_options = self.check(req.rtsp.url, dict(req.rtsp.options))
        holder: dict[str, Any] = {"failed": asyncio.get_running_loop().create_future()}
        source = self.open(track_id, req.rtsp.url, source_options, holder)
        frames = source.frames().__aiter__()
        try:
            first = await self._first_frame(frames, holder["failed"], req)
            frame = PendingFrame(rgb=first.rgb, frame_number=0, pts=first.pts, capture_time=first.capture_time,
                                 receive_time=first.receive_time or time.time())
            track = await self.port.init_track(track_id, first.rgb, box, options, redact_url(req.rtsp.url), labels)
        except BaseException:  # a bad box, an engine error, or the caller gone (cancelled): no orphan source
            await source.stop()  # idempotent
            raise
        track.pull = {"url": req.rtsp.url, "options": source_options}
        track.source_obj = source
        holder["track"] = track
        track.source_task = asyncio.create_task(self.pump(track, frames), name=f"pump {track_id}")
        return track, frame

    async def _first_frame(self, frames: Any, failed: asyncio.Future, req: pb.StartTrackRequest) -> Any:
        """The first frame with pts >= init_pts; a failed first attempt (refused, 401, 404, open deadline)
        answers at once with its reason instead of waiting out --rtsp-start-timeout-s."""
        loop = asyncio.get_running_loop()
        timeout = self.settings.rtsp_start_timeout_s
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
        """Take over pulled tracks whose owner is gone; reopen the source and go on from the stored state."""
        if self.port.draining:
            return
        for track_id in await self.port.orphans():
            track = await self.port.take_over(track_id)
            if track is None:
                continue
            holder = {"track": track}
            try:
                source = self.open(track_id, track.pull["url"], track.pull.get("options", {}), holder)
            except errors.ServiceError as exc:
                event("adopt_failed", 40, track_id=track_id, why=exc.message)
                self.port.register(track)
                await self.port.ended(track, pb.FAILED, f"cannot reopen its source: {exc.message}")
                continue
            track.source_obj = source
            track.source_task = asyncio.create_task(self.pump(track, source.frames().__aiter__()),
                                                    name=f"pump {track_id}")
            self.port.register(track)
            event("track_adopted", track_id=track_id, source=track.source, frame=track.frames_received)

    async def pump(self, track: Track, frames: Any) -> None:
        """Feed a pulled source's frames into the track's slot (results go to sinks only)."""
        try:
            async for f in frames:
                if track.ended:
                    return
                track.last_activity = time.monotonic()
                self.port.submit(track, PendingFrame(
                    rgb=f.rgb, frame_number=track.next_frame_number(), pts=f.pts, capture_time=f.capture_time,
                    receive_time=f.receive_time or time.time()))
        except asyncio.CancelledError:
            return
        except Exception as exc:
            event("source_error", 40, track_id=track.track_id, error=redact(repr(exc)))
        if not track.ended and not self.port.draining:
            state = getattr(track.source_obj.state, "value", str(track.source_obj.state))
            status = pb.FAILED if state == "failed" else pb.STOPPED
            event("source_ended", 30, track_id=track.track_id, state=state)
            # Nothing will feed this track again: free its slot and lease instead of renewing them forever.
            await self.port.ended(track, status, f"source ended ({state})")


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
    return redact(text.replace(url, redact_url(url)) if url else text)
