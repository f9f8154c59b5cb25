"""Where the console's new tracks get frames: video files from `--console-media-dir`, or an RTSP URL.

A file track is a push track fed by this module (decode with PyAV in a thread, `TrackManager.push` each
frame at the file's own pace, policy `every_frame` so no frame of a file is skipped); it stops at the end
of the file. An RTSP track is the server's own pulled track; the console only grabs a preview frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from lorat.v1 import tracker_pb2 as pb

from .. import errors
from ..log import event
from ..pulled import start_failure_kind
from ..sources.rtsp import redact_url

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".ts", ".mpg", ".mpeg", ".h264", ".264")


class MediaDir:
    """The one folder whose video files the console may open (nothing outside it, no symlink escapes)."""

    def __init__(self, folder: str) -> None:
        self.root = Path(folder).resolve() if folder else None

    def list(self) -> list[str]:
        if self.root is None or not self.root.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                      if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file() and self._inside(p.resolve()))

    def resolve(self, name: str) -> Path:
        if self.root is None:
            raise errors.invalid("this server has no --console-media-dir: only RTSP URLs can be tracked")
        path = (self.root / name).resolve()
        if not self._inside(path) or not path.is_file() or path.suffix.lower() not in VIDEO_SUFFIXES:
            raise errors.not_found(f"no video {name!r} in the console's media folder")
        return path

    def _inside(self, path: Path) -> bool:
        assert self.root is not None
        return path.is_relative_to(self.root)


def video_frames(path: Path, stop: threading.Event | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """(RGB frame, seconds from the start) for each frame of a video file."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        base = float(stream.time_base or 0)
        first: float | None = None
        for i, frame in enumerate(container.decode(stream)):
            if stop is not None and stop.is_set():
                return
            t = float(frame.pts) * base if frame.pts is not None and base else i / 25.0
            first = t if first is None else first
            yield frame.to_ndarray(format="rgb24"), t - first


def first_video_frame(path: Path) -> np.ndarray:
    try:
        return next(video_frames(path))[0]
    except StopIteration:
        raise errors.invalid(f"{path.name} has no video frames") from None
    except errors.ServiceError:
        raise
    except Exception as exc:  # PyAV raises many types for unreadable files
        raise errors.invalid(f"{path.name} could not be decoded: {type(exc).__name__}") from None


def raw_frame(rgb: np.ndarray, pts: int = 0) -> pb.Frame:
    h, w = rgb.shape[:2]
    return pb.Frame(raw=pb.RawImage(format=pb.RawImage.RGB24, width=w, height=h, data=rgb.tobytes()), pts=pts)


async def rtsp_preview(manager: Any, url: str, timeout: float) -> np.ndarray:
    """One decoded frame of a stream, to draw the box on (the track itself starts on a later frame)."""
    pulled = getattr(manager, "pulled", None)
    if pulled is None:
        raise errors.ServiceError(grpc.StatusCode.UNIMPLEMENTED, "RTSP is not available on this server")
    failed: asyncio.Future = asyncio.get_running_loop().create_future()

    def on_state(old: object, new: object, reason: str) -> None:
        if getattr(new, "value", str(new)) in ("reconnecting", "failed") and not failed.done():
            failed.set_result(reason)

    try:
        source = pulled.factory(url, {}, track_id=f"console-preview-{uuid.uuid4().hex[:6]}",
                                on_state_change=on_state)
    except ValueError as exc:
        raise errors.invalid(str(exc)) from None
    nxt = asyncio.ensure_future(source.frames().__anext__())
    try:
        done, _ = await asyncio.wait({nxt, failed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if nxt in done and nxt.exception() is None:
            return nxt.result().rgb
        reason = failed.result() if failed.done() else f"no frame within {timeout:g}s"
        raise errors.unavailable(f"preview of {redact_url(url)} failed ({start_failure_kind(reason)}): "
                                 f"{reason.replace(url, redact_url(url))}")
    finally:
        nxt.cancel()
        await source.stop()


class FileFeeder:
    """Push a video file's frames into a push track at the file's pace; stop the track at the end."""

    def __init__(self, manager: Any, track_id: str, path: Path, pace: float = 1.0) -> None:
        self.manager = manager
        self.track_id = track_id
        self.path = path
        self.pace = pace  # 1.0: real time; 0: as fast as the track takes them
        self._stop = threading.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"console file {self.track_id}")

    def cancel(self) -> None:
        self._stop.set()
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(maxsize=4)

        def put(item: Any) -> None:
            fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    return fut.result(timeout=0.5)
            fut.cancel()

        def read() -> None:  # decoding thread: at most 4 frames ahead of the pushes
            try:
                for i, (rgb, t) in enumerate(video_frames(self.path, self._stop)):
                    if i == 0:
                        continue  # the track started on it
                    put((rgb, t))
            except Exception as exc:
                event("console_file_error", 30, track_id=self.track_id, error=type(exc).__name__)
            finally:
                put(None)

        threading.Thread(target=read, name=f"console-file {self.track_id}", daemon=True).start()
        started = time.monotonic()
        try:
            while (item := await queue.get()) is not None:
                rgb, t = item
                if self.pace > 0:
                    await asyncio.sleep(max(0.0, started + t / self.pace - time.monotonic()))
                fut = await self.manager.push(self.track_id, raw_frame(rgb, int(t * 1000)))
                await fut
            with contextlib.suppress(errors.ServiceError):
                await self.manager.stop_track(self.track_id)
            event("console_file_done", track_id=self.track_id, file=self.path.name)
        except errors.ServiceError as exc:  # stopped from elsewhere, server draining
            event("console_file_ended", track_id=self.track_id, why=exc.message)
        except asyncio.CancelledError:
            pass
        finally:
            self._stop.set()
