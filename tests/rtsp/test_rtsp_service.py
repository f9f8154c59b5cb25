"""A camera track survives its camera: kill the RTSP server mid-track, restart it, and the track carries on
by itself, with the outage visible in GetTrack, in published results and in the metrics."""

from __future__ import annotations

import threading
import time

import pytest
from lorat.v1 import tracker_pb2 as pb

from ..service.conftest import checkpoint, metric_value, server, shared_redis  # noqa: F401  (fixtures)
from .conftest import GST_MISSING, GST_OK, GstRtspServer, free_port


def _wait_state(stub, track_id: str, state: int, timeout: float) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        info = stub.GetTrack(pb.GetTrackRequest(track_id=track_id), timeout=5)
        if info.source_state == state:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"source never reached {pb.SourceState.Name(state)}; last {info}")


def test_track_recovers_after_camera_restart(server) -> None:  # noqa: F811  # type: ignore[no-untyped-def]
    if not GST_OK:
        pytest.skip(GST_MISSING)
    cam = GstRtspServer(free_port())
    cam.start()
    stub = server.stub
    results: list[pb.TrackResult] = []
    watch = stub.WatchTracks(pb.WatchTracksRequest(track_ids=["cam-restart"]))

    def follow() -> None:
        try:
            for r in watch:
                results.append(r)
        except Exception:  # cancelled at the end
            pass

    threading.Thread(target=follow, daemon=True).start()
    try:
        stub.StartTrack(pb.StartTrackRequest(
            track_id="cam-restart", rtsp=pb.RtspSource(url=cam.url),
            initial_box=pb.Box(x=40, y=30, width=40, height=40)), timeout=60)
        _wait_state(stub, "cam-restart", pb.SOURCE_RUNNING, 20)
        deadline = time.monotonic() + 20
        while sum(r.status == pb.TRACKING for r in results) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = max(r.frame_number for r in results)

        cam.kill()
        _wait_state(stub, "cam-restart", pb.SOURCE_RECONNECTING, 15)
        time.sleep(1.0)  # at least one failed attempt against the dead port
        cam.start()
        _wait_state(stub, "cam-restart", pb.SOURCE_RUNNING, 30)
        deadline = time.monotonic() + 20
        while not any(r.status == pb.TRACKING and r.frame_number > before + 3 for r in results):
            assert time.monotonic() < deadline, "no tracking results after the camera came back"
            time.sleep(0.05)

        statuses = [r.status for r in results]
        assert pb.RECONNECTING in statuses  # watchers were told
        after = statuses.index(pb.RECONNECTING)
        assert pb.TRACKING in statuses[after:]
        numbers = [r.frame_number for r in results if r.status == pb.TRACKING]
        assert numbers == sorted(numbers)
        info = stub.GetTrack(pb.GetTrackRequest(track_id="cam-restart"))
        assert info.status == pb.TRACKING and info.source_state == pb.SOURCE_RUNNING
        text = server.metrics_text()
        assert metric_value(text, "lorat_source_reconnects_total", 'track_id="cam-restart"') >= 1
        assert metric_value(text, "lorat_source_state", 'state="running",track_id="cam-restart"') == 1
        stub.StopTrack(pb.StopTrackRequest(track_id="cam-restart"))
        time.sleep(0.2)
        leftover = [line for line in server.metrics_text().splitlines()
                    if line.startswith("lorat_source_") and 'track_id="cam-restart"' in line]
        assert leftover == [], "per-track source series must go when the track stops"
    finally:
        watch.cancel()
        cam.kill()


def test_track_whose_camera_never_returns_fails_and_is_retired(shared_redis, checkpoint, tmp_path) -> None:  # noqa: F811  # type: ignore[no-untyped-def]
    if not GST_OK:
        pytest.skip(GST_MISSING)
    from ..service.conftest import ServerProc

    cam = GstRtspServer(free_port())
    cam.start()
    srv = ServerProc(shared_redis.url, checkpoint, tmp_path / "server.log", rtsp_max_attempts=2,
                     rtsp_open_timeout_s=5.0, rtsp_read_timeout_s=1.0, rtsp_backoff_initial_s=0.1,
                     rtsp_backoff_max_s=0.2).start()
    try:
        stub = srv.stub
        stub.StartTrack(pb.StartTrackRequest(
            track_id="cam-gone", rtsp=pb.RtspSource(url=cam.url),
            initial_box=pb.Box(x=40, y=30, width=40, height=40)), timeout=60)
        _wait_state(stub, "cam-gone", pb.SOURCE_RUNNING, 20)
        cam.kill()
        deadline = time.monotonic() + 30
        while stub.GetTrack(pb.GetTrackRequest(track_id="cam-gone")).status != pb.FAILED:
            assert time.monotonic() < deadline, "the track never failed after its camera died for good"
            time.sleep(0.1)
        # Retired: no longer held, no longer counted, its lease free, its final state in Redis.
        assert "cam-gone" not in [t.track_id for t in stub.ListTracks(pb.ListTracksRequest()).tracks]
        assert metric_value(srv.metrics_text(), "lorat_active_tracks") == 0
        client = shared_redis.client()
        assert client.get("lorat:lease:{cam-gone}") is None
        assert client.hget("lorat:track:{cam-gone}", "status") == b"FAILED"
    finally:
        srv.terminate()
        cam.kill()
