"""SDK pieces that need no server: boxes, frames, conversions, retry timing, drawing, progress."""

from __future__ import annotations

import io
import subprocess
import sys

import grpc
import numpy as np
import pytest
from lorat.v1 import tracker_pb2 as pb
from lorat_client import Box, RetryPolicy, TrackInfo, TrackResult
from lorat_client._common import make_frame, metadata_tuple, start_request
from lorat_client.cli import Progress, build_parser, csv_line, draw_box


def test_box_parsing() -> None:
    assert Box.parse("1, 2,3.5,4") == Box(1, 2, 3.5, 4)
    assert Box.of([1, 2, 3, 4]).xyxy == (1, 2, 4, 6)
    for bad in ("1,2,3", "a,b,c,d", "1,2,3,4,5"):
        with pytest.raises(ValueError):
            Box.parse(bad)
    with pytest.raises(SystemExit):  # argparse rejects it with a message, no traceback
        build_parser().parse_args(["track", "x.mp4", "--box", "1,2,0,4"])


def test_raw_frames_keep_pixels_and_format() -> None:
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    m = make_frame(rgb[:, ::-1], pts=7, capture_time=12.5)  # a non-contiguous view is copied correctly
    assert (m.raw.width, m.raw.height, m.raw.stride, m.raw.format) == (5, 4, 15, pb.RawImage.RGB24)
    assert np.array_equal(np.frombuffer(m.raw.data, np.uint8).reshape(4, 5, 3), rgb[:, ::-1])
    assert m.pts == 7 and m.capture_time.ToNanoseconds() == 12_500_000_000
    assert make_frame(rgb, pixel_format="BGR").raw.format == pb.RawImage.BGR24
    assert make_frame(b"\xff\xd8jpeg").WhichOneof("data") == "encoded"
    assert make_frame(b"\x00\x00\x00\x01", h264=True).WhichOneof("data") == "h264"
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        make_frame(np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        make_frame(np.zeros((4, 5, 3), np.float32))
    with pytest.raises(TypeError):
        make_frame("frame.jpg")  # type: ignore[arg-type]


def test_start_request_sources() -> None:
    common = dict(track_id=None, model="", overload="fifo", max_frame_age=0.5, max_queue=3, labels={"a": "b"},
                  rtsp_options={"rtsp_transport": "udp"}, init_pts=90, pts=0, capture_time=None,
                  pixel_format="rgb")
    req = start_request("rtsp://cam/1", (1, 2, 3, 4), **common)
    assert req.WhichOneof("source") == "rtsp" and req.rtsp.options["rtsp_transport"] == "udp"
    assert req.rtsp.init_pts == 90 and req.options.overload_policy == pb.FIFO and req.labels["a"] == "b"
    req = start_request(np.zeros((8, 8, 3), np.uint8), Box(1, 2, 3, 4), **common)
    assert req.WhichOneof("source") == "first_frame" and req.initial_box.width == 3
    with pytest.raises(ValueError, match="stream URL"):
        start_request("video.mp4", (1, 2, 3, 4), **common)
    with pytest.raises(ValueError, match="overload"):
        start_request("rtsp://x/y", (1, 2, 3, 4), **{**common, "overload": "sometimes"})


def test_results_convert_from_protos() -> None:
    m = pb.TrackResult(track_id="t", frame_number=3, source_pts=9, box=pb.Box(x=1, y=2, width=3, height=4),
                       confidence=0.75, status=pb.DROPPED, drop_reason="superseded", model_id="m")
    m.capture_time.FromNanoseconds(1_000_000_000)
    m.publish_time.FromNanoseconds(1_250_000_000)
    r = TrackResult.from_proto(m)
    assert (r.track_id, r.frame_number, r.box, r.status, r.drop_reason) == ("t", 3, Box(1, 2, 3, 4), "DROPPED",
                                                                             "superseded")
    assert r.receive_time is None and r.latency == pytest.approx(0.25) and not r.tracking
    info = TrackInfo.from_proto(pb.TrackInfo(track_id="t", status=pb.TRACKING, source_state=pb.SOURCE_RECONNECTING,
                                             frames_dropped={"too_old": 2}))
    assert info.source_state == "RECONNECTING" and info.frames_dropped == {"too_old": 2}
    assert info.last_result is None
    assert csv_line(r).startswith("3,9,1.00,2.00,3.00,4.00,0.7500,DROPPED,superseded,250.0")


def test_retry_policy_backs_off_with_jitter_and_only_on_unavailable() -> None:
    p = RetryPolicy(max_attempts=4, initial_backoff=0.1, max_backoff=0.3)
    delays = [[p.delay(n) for _ in range(200)] for n in (1, 2, 3, 4)]
    for d, base in zip(delays, (0.1, 0.2, 0.3, 0.3)):
        assert base * 0.5 <= min(d) and max(d) <= base and np.std(d) > 0

    class Err(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode) -> None:
            self._code = code

        def code(self) -> grpc.StatusCode:
            return self._code

    assert p.should_retry(Err(grpc.StatusCode.UNAVAILABLE), 3)
    assert not p.should_retry(Err(grpc.StatusCode.UNAVAILABLE), 4)
    assert not p.should_retry(Err(grpc.StatusCode.INVALID_ARGUMENT), 1)
    assert metadata_tuple({"Authorization": "Bearer x"}) == (("authorization", "Bearer x"),)


def test_draw_box_outline_only_and_clipped() -> None:
    img = np.zeros((20, 30, 3), np.uint8)
    out = draw_box(img, Box(5, 4, 10, 8), (0, 255, 0), thickness=1)
    assert out[4, 5:15, 1].all() and out[11, 5:15, 1].all() and out[4:12, 5, 1].all() and out[4:12, 14, 1].all()
    assert not out[5:11, 6:14].any() and not img.any()  # inside untouched, input not modified
    clipped = draw_box(img, Box(-5, -5, 100, 100), (255, 0, 0))
    assert clipped.shape == img.shape


def test_progress_is_plain_text() -> None:
    buf = io.StringIO()
    p = Progress(10, buf)
    for _ in range(10):
        p.update(force=True)
    p.close()
    assert "10/10" in buf.getvalue() and "[" + "#" * 30 + "]" in buf.getvalue()


def test_sdk_never_imports_torch() -> None:
    code = "import sys, lorat_client, lorat_client.cli, lorat_client.aio; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_retried_push_carries_the_same_push_id() -> None:
    """The server applies a push once per `lorat-push-id`; the SDK keeps the id across its retries."""
    from lorat_client import Client

    class Unavailable(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

        def details(self) -> str:
            return "owner did not answer"

    seen: list[tuple] = []

    def push_frame(request, timeout=None, metadata=()):  # type: ignore[no-untyped-def]
        seen.append(tuple(metadata))
        if len(seen) < 3:
            raise Unavailable()
        return pb.TrackResult(track_id=request.track_id, frame_number=7, status=pb.TRACKING)

    client = Client("127.0.0.1:1", token="t", retry=RetryPolicy(max_attempts=5, initial_backoff=0.001,
                                                                max_backoff=0.002))
    try:
        client._stub.PushFrame = push_frame  # type: ignore[method-assign]
        assert client.push("t1", np.zeros((8, 8, 3), np.uint8)).frame_number == 7
        ids = [dict(m)["lorat-push-id"] for m in seen]
        assert len(seen) == 3 and len(set(ids)) == 1 and len(ids[0]) == 32
        assert all(dict(m)["authorization"] == "Bearer t" for m in seen)
        client._stub.PushFrame = push_frame  # type: ignore[method-assign]
        client.push("t1", np.zeros((8, 8, 3), np.uint8))
        assert dict(seen[-1])["lorat-push-id"] != ids[0]  # the next frame gets a new id
    finally:
        client.close()
