"""Redis paused (SIGSTOP), slow (a latency-adding proxy) or killed: tracks never stop, no result is
released before its state is written, and health says when Redis is degraded."""

from __future__ import annotations

import threading
import time

import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lorat.v1 import tracker_pb2 as pb

from server.state.record import decode_record

from ..service.conftest import ServerProc, box_pb, frame_pb, make_frames, metric_value, reference_boxes, xywh
from .harness import LatencyProxy, pause, resume

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _health(server: ServerProc, service: str) -> int:
    return health_pb2_grpc.HealthStub(server.channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=10).status


def _wait_health(server: ServerProc, service: str, want: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _health(server, service) != want:
        assert time.monotonic() < deadline, f"health {service!r} never became {want}"
        time.sleep(0.1)


def _counters(client, track_id: str) -> dict:  # type: ignore[no-untyped-def]
    _, meta = decode_record(client.hget(f"lorat:track:{{{track_id}}}", "state"))
    return meta["server"]


def test_redis_paused_results_wait_for_their_state_and_no_track_stops(redis_proc, checkpoint, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    frames, boxes = make_frames(31, 12)
    expected = reference_boxes(engine, frames, boxes[0])
    s = ServerProc(redis_proc.url, checkpoint, tmp_path / "s.log", lease_ttl_s=1.0).start()
    client = redis_proc.client()
    try:
        s.stub.StartTrack(pb.StartTrackRequest(track_id="paused", first_frame=frame_pb(frames[0]),
                                               initial_box=box_pb(boxes[0])))
        got: list[tuple[float, pb.TrackResult]] = []

        def pusher() -> None:
            for f in frames[1:]:
                res = s.stub.PushFrame(pb.PushFrameRequest(track_id="paused", frame=frame_pb(f)), timeout=60)
                got.append((time.monotonic(), res))
                time.sleep(0.05)

        worker = threading.Thread(target=pusher)
        worker.start()
        while len(got) < 3:
            time.sleep(0.01)
        pause(redis_proc.proc.pid)
        paused_at = time.monotonic()
        try:
            _wait_health(s, "redis", NOT_SERVING)
            time.sleep(3.0)  # longer than the lease (1 s): Redis expires it when it comes back
            assert _health(s, "") == SERVING and _health(s, "liveness") == SERVING  # still serving
        finally:
            resumed_at = time.monotonic()
            resume(redis_proc.proc.pid)
        worker.join(60)
        assert not worker.is_alive()
        # No result was delivered while Redis could not store its state (one may have been in flight).
        during = [r for t, r in got if paused_at + 0.6 < t < resumed_at]
        assert during == [], [r.frame_number for r in during]
        assert [r.status for _, r in got] == [pb.TRACKING] * 11
        assert [r.frame_number for _, r in got] == list(range(1, 12))
        np.testing.assert_allclose([xywh(r.box) for _, r in got], expected, atol=1e-3)
        assert _counters(client, "paused")["frames_processed"] == 11  # every released result is stored
        assert s.stub.GetTrack(pb.GetTrackRequest(track_id="paused")).status == pb.TRACKING
        _wait_health(s, "redis", SERVING)
    finally:
        s.kill()


def test_slow_redis_is_seen_by_latency_and_tracking_is_unchanged(redis_proc, checkpoint, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    frames, boxes = make_frames(32, 10)
    expected = reference_boxes(engine, frames, boxes[0])
    proxy = LatencyProxy(redis_proc.port, delay_s=0.0025).start()  # +5 ms per round trip
    s = ServerProc(proxy.url, checkpoint, tmp_path / "s.log", redis_slow_p99_ms=150).start()
    try:
        s.stub.StartTrack(pb.StartTrackRequest(track_id="slow", first_frame=frame_pb(frames[0]),
                                               initial_box=box_pb(boxes[0])))
        got = [s.stub.PushFrame(pb.PushFrameRequest(track_id="slow", frame=frame_pb(f)), timeout=30)
               for f in frames[1:5]]
        _wait_health(s, "redis", SERVING, timeout=30)  # 5 ms is well under the 150 ms bound
        proxy.delay_s = 0.15  # +300 ms per round trip: slow, but no operation fails (timeout 0.5 s)
        got += [s.stub.PushFrame(pb.PushFrameRequest(track_id="slow", frame=frame_pb(f)), timeout=30)
                for f in frames[5:10]]
        _wait_health(s, "redis", NOT_SERVING)
        text = s.metrics_text()
        assert metric_value(text, "lorat_redis_degraded") == 1
        assert metric_value(text, "lorat_redis_latency_p99_seconds") > 0.15
        np.testing.assert_allclose([xywh(r.box) for r in got], expected, atol=1e-3)
        assert [r.status for r in got] == [pb.TRACKING] * 9
        proxy.delay_s = 0.0
        _wait_health(s, "redis", SERVING, timeout=30)  # the 10 s latency window forgets the slow phase
    finally:
        s.kill()
        proxy.stop()
