"""A pulled track end to end: GStreamer RTSP server -> RtspSource -> scheduler -> WatchTracks."""

from __future__ import annotations

import grpc
import pytest
from lorat.v1 import tracker_pb2 as pb

from ..rtsp.conftest import GST_MISSING, GST_OK, GstRtspServer, free_port
from .conftest import ServerProc, frame_pb, make_frames


def test_rtsp_track_publishes_results_and_refuses_pushes(server) -> None:  # type: ignore[no-untyped-def]
    if not GST_OK:
        pytest.skip(GST_MISSING)
    cam = GstRtspServer(free_port())
    cam.start()
    try:
        stub = server.stub
        watch = stub.WatchTracks(pb.WatchTracksRequest(track_ids=["cam"]))
        resp = stub.StartTrack(pb.StartTrackRequest(
            track_id="cam", rtsp=pb.RtspSource(url=cam.url), initial_box=pb.Box(x=40, y=30, width=40, height=40)),
            timeout=60)
        assert resp.first_result.frame_number == 0 and resp.first_result.status == pb.TRACKING
        tracked = []
        for result in watch:
            if result.status == pb.TRACKING:
                tracked.append(result)
            if len(tracked) == 6:
                break
        watch.cancel()
        numbers = [r.frame_number for r in tracked]
        assert numbers[0] == 0 and numbers == sorted(numbers) and len(set(numbers)) == 6
        assert all(r.capture_time.seconds > 0 for r in tracked[1:])
        info = stub.GetTrack(pb.GetTrackRequest(track_id="cam"))
        assert info.source == cam.url and info.source_state == pb.SOURCE_RUNNING and info.frames_processed >= 5
        frames, _ = make_frames(0, 1)
        with pytest.raises(grpc.RpcError) as err:
            stub.PushFrame(pb.PushFrameRequest(track_id="cam", frame=frame_pb(frames[0])))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert stub.StopTrack(pb.StopTrackRequest(track_id="cam")).status == pb.STOPPED
    finally:
        cam.kill()


def test_pulled_track_is_adopted_after_its_server_dies(redis_proc, checkpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Nobody pushes to an RTSP track, so a surviving server must take it over by itself."""
    if not GST_OK:
        pytest.skip(GST_MISSING)
    cam = GstRtspServer(free_port())
    cam.start()
    a = ServerProc(redis_proc.url, checkpoint, tmp_path / "a.log", lease_ttl_s=1.0).start()
    b = None
    try:
        watch = a.stub.WatchTracks(pb.WatchTracksRequest(track_ids=["cam2"]))
        a.stub.StartTrack(pb.StartTrackRequest(
            track_id="cam2", rtsp=pb.RtspSource(url=cam.url), initial_box=pb.Box(x=40, y=30, width=40, height=40)),
            timeout=60)
        seen = [r.frame_number for r, _ in zip(watch, range(4)) if r.status == pb.TRACKING]
        watch.cancel()
        a.kill()
        b = ServerProc(redis_proc.url, checkpoint, tmp_path / "b.log", lease_ttl_s=1.0).start()
        watch = b.stub.WatchTracks(pb.WatchTracksRequest(track_ids=["cam2"]), timeout=30)
        after = next(r for r in watch if r.status == pb.TRACKING)
        watch.cancel()
        assert after.frame_number > max(seen)  # numbering goes on from the stored state
        assert "event=track_adopted track_id=cam2" in (tmp_path / "b.log").read_text()
        info = b.stub.GetTrack(pb.GetTrackRequest(track_id="cam2"))
        assert info.source == cam.url and info.status == pb.TRACKING
    finally:
        if b is not None:
            b.kill()
        a.kill()
        cam.kill()
