"""A pulled track end to end: GStreamer RTSP server -> RtspSource -> scheduler -> WatchTracks."""

from __future__ import annotations

import grpc
import pytest
from lorat.v1 import tracker_pb2 as pb

from ..rtsp.conftest import GST_MISSING, GST_OK, GstRtspServer, free_port
from .conftest import frame_pb, make_frames


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
