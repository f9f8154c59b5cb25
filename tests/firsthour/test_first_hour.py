"""Issue 13's "nothing in the way" fixes, against a real server: LOST results, frames of a new size,
an RTSP start that fails at once with its reason, SIGINT, and a port already in use."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import grpc
import pytest
from lorat.v1 import tracker_pb2 as pb

from tests.service.conftest import ROOT, RedisProc, ServerProc, box_pb, frame_pb, free_port, make_frames, metric_value
from tests.service.conftest import checkpoint as checkpoint


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):  # type: ignore[no-untyped-def]
    redis = RedisProc().start()
    # The random tiny model scores about 0.5 everywhere: a 0.9 threshold makes every frame "low".
    s = ServerProc(redis.url, checkpoint, tmp_path_factory.mktemp("fh") / "s.log", lost_confidence=0.9,
                   lost_frames=3, rtsp_start_timeout_s=300).start()
    yield s
    s.kill()
    redis.stop()


def test_lost_after_the_documented_run_of_low_confidence_frames(server) -> None:  # type: ignore[no-untyped-def]
    frames, boxes = make_frames(5, 6)
    server.stub.StartTrack(pb.StartTrackRequest(track_id="lost", first_frame=frame_pb(frames[0]),
                                                initial_box=box_pb(boxes[0]),
                                                options=pb.TrackOptions(overload_policy=pb.EVERY_FRAME)))
    statuses = [server.stub.PushFrame(pb.PushFrameRequest(track_id="lost", frame=frame_pb(f))).status
                for f in frames[1:]]
    assert statuses == [pb.TRACKING, pb.TRACKING, pb.LOST, pb.LOST, pb.LOST]
    assert metric_value(server.metrics_text(), "lorat_targets_lost_total") == 1  # one transition


def test_a_frame_of_another_size_is_refused_with_both_sizes(server) -> None:  # type: ignore[no-untyped-def]
    frames, boxes = make_frames(6, 1)
    server.stub.StartTrack(pb.StartTrackRequest(track_id="size", first_frame=frame_pb(frames[0]),
                                                initial_box=box_pb(boxes[0])))
    other, _ = make_frames(6, 1, size=(200, 100))
    with pytest.raises(grpc.RpcError) as err:
        server.stub.PushFrame(pb.PushFrameRequest(track_id="size", frame=frame_pb(other[0])))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "200x100" in err.value.details() and "160x120" in err.value.details()


def test_refused_rtsp_start_answers_with_the_reason(server) -> None:  # type: ignore[no-untyped-def]
    """The start timeout is 300 s: an answer naming "refused" can only come from the failed attempt."""
    with pytest.raises(grpc.RpcError) as err:
        server.stub.StartTrack(pb.StartTrackRequest(
            track_id="cam", rtsp=pb.RtspSource(url=f"rtsp://user:secret@127.0.0.1:{free_port()}/x"),
            initial_box=pb.Box(x=1, y=1, width=5, height=5)), timeout=120)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "refused" in err.value.details() and "secret" not in err.value.details()


def test_sigint_is_logged_as_sigint_and_exits_0(checkpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = ServerProc("", checkpoint, tmp_path / "s.log").start()
    assert s.proc is not None
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(60) == 0
    s._close()
    log = (tmp_path / "s.log").read_text()
    assert "event=sigint" in log and "event=stopped" in log


def test_port_in_use_names_the_port(checkpoint) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "server", "--grpc-port", "0", "--metrics-port", str(port),
                              "--checkpoint", str(checkpoint)], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert out.returncode == 1
    assert f"127.0.0.1:{port} (--metrics-port)" in out.stderr and "in use" in out.stderr


def test_an_undecodable_frame_is_refused_in_plain_words(server) -> None:  # type: ignore[no-untyped-def]
    frames, boxes = make_frames(8, 1)
    server.stub.StartTrack(pb.StartTrackRequest(track_id="garbage", first_frame=frame_pb(frames[0]),
                                                initial_box=box_pb(boxes[0])))
    with pytest.raises(grpc.RpcError) as err:
        server.stub.PushFrame(pb.PushFrameRequest(track_id="garbage", frame=pb.Frame(encoded=b"not an image")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a JPEG or PNG image" in err.value.details() and "BytesIO" not in err.value.details()
