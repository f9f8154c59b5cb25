"""RtspSource against a real GStreamer RTSP server and a silent TCP server, on loopback."""

from __future__ import annotations

import asyncio
import itertools
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from server.sources.rtsp import RtspSource, SourceState, _CaptureClock, redact_url


def _metric(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


class Recorder:
    """Collects (old, new, reason) state transitions with their times."""

    def __init__(self) -> None:
        self.transitions: list[tuple[str, str, str, float]] = []

    def __call__(self, old: SourceState, new: SourceState, reason: str) -> None:
        self.transitions.append((old.value, new.value, reason, time.monotonic()))

    @property
    def states(self) -> list[str]:
        return [t[1] for t in self.transitions]


async def _next_frames(source: RtspSource, n: int, timeout: float) -> list:
    frames = []

    async def collect() -> None:
        async for frame in source.frames():
            frames.append(frame)
            if len(frames) >= n:
                return

    await asyncio.wait_for(collect(), timeout)
    return frames


def test_frames_with_pts_and_capture_times(rtsp_server) -> None:
    async def main() -> None:
        rec = Recorder()
        source = RtspSource(rtsp_server.url, None, open_timeout=8, read_timeout=3, on_state_change=rec,
                            track_id="t-frames", queue_size=64)
        t0 = time.time()
        frames = await _next_frames(source, 8, timeout=20)
        assert source.state is SourceState.RUNNING
        assert _metric("lorat_source_state", track_id="t-frames", state="running") == 1.0
        assert _metric("lorat_source_frames_total", track_id="t-frames") >= 8
        await source.stop()
        assert source.state is SourceState.STOPPED
        assert rec.states == ["running", "stopped"]
        # per-track series are gone once the source stopped
        assert _metric("lorat_source_state", track_id="t-frames", state="running") is None

        for f in frames:
            assert f.rgb.shape == (120, 160, 3) and f.rgb.dtype == np.uint8
            assert t0 <= f.capture_time <= f.receive_time <= time.time()
        pts = [f.pts for f in frames]
        assert all(b > a for a, b in itertools.pairwise(pts)), pts
        # capture times follow the pts clock (15 fps), not arrival jitter: they never run ahead of it, and
        # once the least-delayed frame has been seen they advance exactly with it
        dt = np.diff([f.capture_time for f in frames])
        clock = np.diff(pts) * frames[0].time_base
        assert np.all(dt <= clock + 1e-3), (dt, clock)
        assert np.sum(np.abs(dt - clock) < 1e-3) >= len(dt) // 2, (dt, clock)
        # the ball moves: consecutive frames differ
        assert any(not np.array_equal(a.rgb, b.rgb) for a, b in itertools.pairwise(frames))

    asyncio.run(main())


def test_recovers_after_server_restart(rtsp_server) -> None:
    async def main() -> None:
        rec = Recorder()
        source = RtspSource(rtsp_server.url, None, open_timeout=5, read_timeout=1.0, backoff_initial=0.2,
                            backoff_max=1.0, on_state_change=rec, track_id="t-restart")
        await _next_frames(source, 3, timeout=20)
        assert source.state is SourceState.RUNNING
        rtsp_server.kill()
        # the no-frame watchdog or the broken connection moves the source to reconnecting
        deadline = time.monotonic() + 5
        while source.state is SourceState.RUNNING and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert source.state is SourceState.RECONNECTING, rec.transitions
        await asyncio.sleep(0.5)  # let it fail at least once against the closed port
        rtsp_server.start()
        frames = await _next_frames(source, 3, timeout=20)
        assert frames and source.state is SourceState.RUNNING
        assert rec.states[:3] == ["running", "reconnecting", "running"], rec.transitions
        assert source.reconnects >= 1
        assert _metric("lorat_source_reconnects_total", track_id="t-restart") == source.reconnects
        await source.stop()

    asyncio.run(main())


def test_silent_server_trips_open_deadline(silent_server) -> None:
    async def main() -> None:
        rec = Recorder()
        source = RtspSource(silent_server.url, None, open_timeout=0.8, read_timeout=0.8,
                            backoff_initial=0.05, backoff_max=0.1, max_attempts=2, on_state_change=rec,
                            track_id="t-silent")
        t0 = time.monotonic()
        frames: list = []
        source.start()
        while source.state not in (SourceState.RECONNECTING, SourceState.FAILED):
            await asyncio.sleep(0.02)
            assert time.monotonic() - t0 < 3, "open deadline did not fire"
        assert time.monotonic() - t0 < 0.8 + 0.5
        async for frame in source.frames():  # ends when the source fails
            frames.append(frame)
        elapsed = time.monotonic() - t0
        assert not frames
        assert source.state is SourceState.FAILED
        assert rec.states == ["reconnecting", "failed"]
        assert "open deadline" in source.last_error
        assert elapsed < 2 * 0.8 + 0.1 + 1.0
        assert silent_server.accepted, "the source never connected to the silent server"
        await source.stop()
        assert source.state is SourceState.FAILED  # stop() keeps the failure visible to its owner

    asyncio.run(main())


def test_stop_during_connect_is_prompt(silent_server) -> None:
    async def main() -> None:
        source = RtspSource(silent_server.url, None, open_timeout=30, read_timeout=30, track_id="t-stop")
        source.start()
        await asyncio.sleep(0.3)
        assert source.state is SourceState.CONNECTING
        # other work on the loop is not blocked by the hung connect
        t_tick = time.monotonic()
        await asyncio.sleep(0.01)
        assert time.monotonic() - t_tick < 0.2
        t0 = time.monotonic()
        await source.stop()
        assert time.monotonic() - t0 < 1.0
        assert source.state is SourceState.STOPPED
        assert [f async for f in source.frames()] == []

    asyncio.run(main())


def test_capture_clock() -> None:
    clock = _CaptureClock(time_base=1 / 90000)
    # the first frame arrives 50 ms late, the next ones on time: capture times follow the least delay
    assert clock.capture_time(0, 100.05) == pytest.approx(100.05)
    assert clock.capture_time(9000, 100.1) == pytest.approx(100.1)
    # a backlog builds up: arrivals fall behind, capture times keep the camera's pace (age grows)
    assert clock.capture_time(18000, 100.7) == pytest.approx(100.2, abs=1e-3)
    assert clock.capture_time(27000, 101.5) == pytest.approx(100.3, abs=3e-3)
    # pts going backwards (camera restarted its clock) re-anchors on arrival
    assert clock.capture_time(100, 102.0) == pytest.approx(102.0)
    assert _CaptureClock(0.0).capture_time(5, 7.0) == 7.0  # no time base: arrival time


def test_bad_arguments_and_redaction() -> None:
    with pytest.raises(ValueError):
        RtspSource("not a url", None)
    with pytest.raises(ValueError):
        RtspSource("rtsp://127.0.0.1:1/x", None, open_timeout=0)
    assert redact_url("rtsp://user:secret@cam.local:554/s") == "rtsp://cam.local:554/s"
    src = RtspSource("rtsp://127.0.0.1:1/x", {"rtsp_transport": "udp"})
    assert src.options["rtsp_transport"] == "udp" and "analyzeduration" in src.options
