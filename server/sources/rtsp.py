"""A supervised RTSP (or any FFmpeg URL) source: pull, decode, and recover by itself.

Why this shape: FFmpeg's blocking open/read calls cannot be cancelled from Python, and their own
timeouts have gaps (a server that accepts the connection and then says nothing can hold a read for a
long time). So every connection attempt runs in its own daemon thread, and an asyncio supervisor
enforces the open and no-frame deadlines from outside: when a deadline passes it abandons the thread (it
will end on FFmpeg's socket timeout, its late frames are ignored) and reconnects with exponential backoff
and jitter. The event loop never blocks, a hung camera never holds up another, and ``stop()`` returns at
once whatever the thread is doing.

States: ``connecting`` (first attempt) -> ``running`` (frames flow) -> ``reconnecting`` (after an error,
end of stream or a deadline; includes the backoff wait and the next attempts) -> ``running`` ... ;
``failed`` after ``max_attempts`` consecutive attempts without a frame; ``stopped`` after ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from server.sources import metrics
from server.sources.frame import DecodedFrame
from server.urlpolicy import protocol_whitelist, redact, redact_url

__all__ = ["DEFAULT_OPTIONS", "RtspSource", "SourceState", "redact_url"]

log = logging.getLogger("lorat.sources.rtsp")


class SourceState(str, enum.Enum):
    CONNECTING = "connecting"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    STOPPED = "stopped"


# FFmpeg options applied unless the caller names them: TCP (no packet loss through NAT/firewalls) and a
# short probe so that opening takes ~0.2 s instead of ~1.2 s.
DEFAULT_OPTIONS: dict[str, str] = {
    "rtsp_transport": "tcp",
    "analyzeduration": "200000",
    "probesize": "65536",
    "fflags": "nobuffer",
}

StateCallback = Callable[["SourceState", "SourceState", str], Any]




@dataclass
class _Event:
    kind: str  # "frame" | "end"
    frame: DecodedFrame | None = None
    error: str = ""


class _CaptureClock:
    """Wall-clock capture times from PTS: ``pts * time_base + offset``.

    ``offset`` follows the least-delayed frame seen (``min(arrival - pts * time_base)``), so capture
    times advance exactly with the camera's clock, are never later than arrival, and a backlog (frames
    arriving ever later) shows as growing frame age instead of being hidden. It may creep up by
    ``drift`` seconds per second so that a camera clock slower than ours does not look like latency.
    A PTS that goes backwards or jumps by more than an hour resets it.
    """

    def __init__(self, time_base: float, drift: float = 1e-3) -> None:
        self.time_base = time_base
        self.drift = drift
        self.offset: float | None = None
        self.last: tuple[int, float] | None = None

    def capture_time(self, pts: int, now: float) -> float:
        if pts < 0 or self.time_base <= 0:
            return now
        base = now - pts * self.time_base
        if self.offset is None or self.last is None or pts < self.last[0] or base - self.offset > 3600:
            self.offset = base
        else:
            self.offset = min(self.offset + self.drift * max(0.0, now - self.last[1]), base)
        self.last = (pts, now)
        return pts * self.time_base + self.offset


class _Reader:
    """One connection attempt: a daemon thread that opens the URL and decodes until told to go away."""

    def __init__(
        self,
        url: str,
        options: dict[str, str],
        open_timeout: float,
        read_timeout: float,
        loop: asyncio.AbstractEventLoop,
        events: asyncio.Queue[_Event],
        max_pixels: int = 4096 * 4096,
        hwaccel: Any = None,
    ) -> None:
        self._max_pixels = max_pixels
        self._hwaccel = hwaccel
        self._url = url
        self._options = options
        self._timeouts = (open_timeout, read_timeout)
        self._loop = loop
        self._events = events
        self._abandoned = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"rtsp-reader {redact_url(url)}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def abandon(self) -> None:
        """Stop delivering; the thread ends at its next frame or when FFmpeg's own timeout fires."""
        self._abandoned.set()

    def _emit(self, event: _Event) -> None:
        if self._abandoned.is_set():
            return
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._abandoned.set()

    def _run(self) -> None:
        import av  # imported here so that importing this module stays cheap

        container = None
        error = "end of stream"
        try:
            extra = {} if self._hwaccel is None else {"hwaccel": self._hwaccel}  # GPU decoding, CPU fallback
            container = av.open(self._url, mode="r", options=self._options, timeout=self._timeouts, **extra)
            if self._abandoned.is_set():
                return
            stream = container.streams.video[0]
            time_base = float(stream.time_base) if stream.time_base else 0.0
            clock = _CaptureClock(time_base)
            for packet in container.demux(stream):
                if self._abandoned.is_set():
                    return
                for frame in packet.decode():
                    if frame.width * frame.height > self._max_pixels:
                        raise ValueError(f"camera frame {frame.width}x{frame.height} is over the server limit "
                                         f"of {self._max_pixels} pixels (--max-frame-width/height)")
                    now = time.time()
                    rgb = frame.to_ndarray(format="rgb24")
                    pts = int(frame.pts) if frame.pts is not None else -1
                    capture = clock.capture_time(pts, now)
                    self._emit(_Event("frame", DecodedFrame(rgb, pts, capture, now, time_base)))
        except Exception as exc:  # any FFmpeg/PyAV failure ends this attempt; the supervisor decides
            error = redact(f"{type(exc).__name__}: {exc}")  # FFmpeg's text may carry the URL's password
        finally:
            if container is not None:
                # closing a broken container must not mask the real error
                with contextlib.suppress(Exception):
                    container.close()
        self._emit(_Event("end", error=error))


class RtspSource:
    """Pull and decode a camera stream, reconnecting by itself; see the module docstring.

    ``open_timeout``: seconds from the start of an attempt to its first decoded frame.
    ``read_timeout``: the no-frame watchdog once running (also FFmpeg's socket I/O timeout).
    ``backoff_initial``/``backoff_max``: the wait before reconnect attempt n is
    ``min(max, initial * 2**(n-1))``, jittered to between half and all of it.
    ``max_attempts``: consecutive attempts without a frame before ``failed`` (0 or None: never give up).
    ``on_state_change(old, new, reason)`` is called on the event loop (may be a coroutine function).
    ``queue_size``: decoded frames held for a slow consumer; beyond it the oldest are dropped (a live
    camera must never back up into the network).
    ``hwaccel``: a PyAV ``HWAccel`` (FFmpeg's CUDA decoder, from ``BatchExecutor.video_hwaccel``) or None.
    """

    def __init__(
        self,
        url: str,
        options: dict[str, str] | None = None,
        *,
        open_timeout: float = 10.0,
        read_timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_attempts: int | None = 0,
        on_state_change: StateCallback | None = None,
        track_id: str = "",
        queue_size: int = 2,
        max_pixels: int = 4096 * 4096,
        hwaccel: Any = None,
    ) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ValueError(f"not a stream URL: {url!r}")
        if open_timeout <= 0 or read_timeout <= 0:
            raise ValueError("open_timeout and read_timeout must be positive")
        if backoff_initial < 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 <= backoff_initial <= backoff_max")
        self.url = url
        self.options = {**DEFAULT_OPTIONS, **{str(k): str(v) for k, v in (options or {}).items()}}
        # Server-side: FFmpeg may open only the protocols this URL's scheme needs (no file:, http: ...).
        self.options["protocol_whitelist"] = protocol_whitelist(url)
        self.max_pixels = int(max_pixels)
        self.hwaccel = hwaccel
        # FFmpeg's RTSP socket timeout (microseconds) lets an abandoned thread end by itself.
        if url.lower().startswith(("rtsp://", "rtsps://")):
            self.options.setdefault("timeout", str(int(max(open_timeout, read_timeout) * 1e6)))
        self.open_timeout = float(open_timeout)
        self.read_timeout = float(read_timeout)
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self.max_attempts = int(max_attempts or 0)
        self.on_state_change = on_state_change
        self.track_id = track_id or redact_url(url)
        self.reconnects = 0
        self.frames_decoded = 0
        self.frames_dropped = 0
        self.last_error = ""
        self._state = SourceState.CONNECTING
        self._out: asyncio.Queue[DecodedFrame | None] = asyncio.Queue(maxsize=max(1, queue_size))
        self._queue_size = max(1, queue_size)
        self._task: asyncio.Task[None] | None = None
        self._reader: _Reader | None = None
        self._stopping = False
        metrics.set_state(self.track_id, self._state.value)

    # -- public API ---------------------------------------------------------------------------------

    @property
    def state(self) -> SourceState:
        return self._state

    def start(self) -> None:
        """Start the supervisor (``frames()`` does it too). Must be called on the event loop."""
        if self._task is None and not self._stopping:
            self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"rtsp {self.track_id}")

    async def frames(self) -> AsyncIterator[DecodedFrame]:
        """Decoded frames, across reconnects, until the source is stopped or has failed."""
        self.start()
        while True:
            frame = await self._out.get()
            if frame is None:
                return
            yield frame

    async def stop(self) -> None:
        """Stop at once (even mid-connect): the reader thread is abandoned, not waited for."""
        if self._stopping:
            return
        self._stopping = True
        if self._reader is not None:
            self._reader.abandon()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._state is not SourceState.FAILED:
            await self._set_state(SourceState.STOPPED, "stopped")
        self._finish()
        metrics.forget(self.track_id)

    # -- supervisor -------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        failures = 0
        first = True
        try:
            while not self._stopping:
                if not first:
                    await self._set_state(SourceState.RECONNECTING, self.last_error)
                    delay = self._backoff(failures)
                    log.info(
                        "source reconnecting track_id=%s in=%.2fs attempt=%d reason=%s",
                        self.track_id, delay, failures + 1, self.last_error,
                    )
                    await asyncio.sleep(delay)
                    self.reconnects += 1
                    metrics.SOURCE_RECONNECTS.labels(track_id=self.track_id).inc()
                first = False
                got_frame = await self._attempt()
                failures = 0 if got_frame else failures + 1
                if self.max_attempts and failures >= self.max_attempts:
                    log.warning(
                        "source failed track_id=%s attempts=%d reason=%s",
                        self.track_id, failures, self.last_error,
                    )
                    await self._set_state(
                        SourceState.FAILED, f"{failures} attempts without a frame: {self.last_error}"
                    )
                    break
        finally:
            if self._reader is not None:
                self._reader.abandon()
            if not self._stopping:
                self._finish()

    async def _attempt(self) -> bool:
        """One connection: returns whether any frame arrived. Sets ``last_error`` when it ends."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[_Event] = asyncio.Queue()
        reader = _Reader(self.url, self.options, self.open_timeout, self.read_timeout, loop, events,
                         self.max_pixels, self.hwaccel)
        self._reader = reader
        started = time.monotonic()
        reader.start()
        got_frame = False
        try:
            while not self._stopping:  # Python < 3.12: wait_for can swallow the cancel when an event is ready
                timeout = self.read_timeout if got_frame else self.open_timeout
                try:
                    event = await asyncio.wait_for(events.get(), timeout)
                except asyncio.TimeoutError:
                    if got_frame:
                        self.last_error = f"no frame for {self.read_timeout:g}s"
                        metrics.SOURCE_ERRORS.labels(kind="read_timeout").inc()
                    else:
                        self.last_error = f"no frame within the open deadline of {self.open_timeout:g}s"
                        metrics.SOURCE_ERRORS.labels(kind="open_timeout").inc()
                    return got_frame
                if event.kind == "end":
                    self.last_error = event.error
                    kind = "eof" if event.error == "end of stream" else "error"
                    metrics.SOURCE_ERRORS.labels(kind=kind).inc()
                    return got_frame
                assert event.frame is not None
                if not got_frame:
                    got_frame = True
                    metrics.SOURCE_OPEN_SECONDS.observe(time.monotonic() - started)
                    await self._set_state(SourceState.RUNNING, "first frame")
                self._deliver(event.frame)
            return got_frame
        finally:
            reader.abandon()

    def _deliver(self, frame: DecodedFrame) -> None:
        self.frames_decoded += 1
        metrics.SOURCE_FRAMES.labels(track_id=self.track_id).inc()
        metrics.SOURCE_LAST_FRAME.labels(track_id=self.track_id).set(frame.receive_time)
        while self._out.full():  # the consumer is behind: keep the newest frames
            self._out.get_nowait()
            self.frames_dropped += 1
            metrics.SOURCE_FRAMES_DROPPED.labels(track_id=self.track_id).inc()
        self._out.put_nowait(frame)

    def _finish(self) -> None:
        """Wake the consumer and end ``frames()``."""
        while self._out.full():
            self._out.get_nowait()
        self._out.put_nowait(None)

    def _backoff(self, failures: int) -> float:
        base = min(self.backoff_max, self.backoff_initial * (2 ** max(0, failures - 1)))
        return base * random.uniform(0.5, 1.0)

    async def _set_state(self, new: SourceState, reason: str) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        log.info("source state track_id=%s %s->%s reason=%s", self.track_id, old.value, new.value, reason)
        if new is not SourceState.STOPPED:
            metrics.set_state(self.track_id, new.value)
        if self.on_state_change is not None:
            try:
                result = self.on_state_change(old, new, reason)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # a faulty observer must not kill the source
                log.exception("on_state_change failed track_id=%s", self.track_id)
