"""State outside the process: SIGKILL + resume on a new server, SIGTERM drain, Redis outage (results
wait for their state write; nothing is lost)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lorat.v1 import tracker_pb2 as pb

from server.state.record import decode_record

from .conftest import (
    RedisProc,
    ServerProc,
    box_pb,
    frame_pb,
    make_frames,
    metric_value,
    push_frame,
    reference_boxes,
    xywh,
)


def stored_counters(client, track_id: str) -> dict:  # type: ignore[no-untyped-def]
    """The server's counters in a track's stored state record (binary, never JSON or pickle)."""
    _, meta = decode_record(client.hget(f"lorat:track:{{{track_id}}}", "state"))
    return meta["server"]


def redis_health(server: ServerProc) -> int:
    stub = health_pb2_grpc.HealthStub(server.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service="redis"), timeout=5).status



def test_sigkill_then_new_server_continues_the_track(redis_proc, checkpoint, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    frames, boxes = make_frames(11, 10)
    expected = reference_boxes(engine, frames, boxes[0])
    a = ServerProc(redis_proc.url, checkpoint, tmp_path / "a.log", lease_ttl_s=1.0).start()
    a.stub.StartTrack(pb.StartTrackRequest(track_id="survivor", first_frame=frame_pb(frames[0]),
                                           initial_box=box_pb(boxes[0])))
    got = [push_frame(a, "survivor", f) for f in frames[1:5]]
    a.kill()  # SIGKILL: no chance to flush anything; what is in Redis is what was written per frame

    b = ServerProc(redis_proc.url, checkpoint, tmp_path / "b.log", lease_ttl_s=1.0).start()
    got.append(push_frame(b, "survivor", frames[5], retry_s=5.0))  # waits out a's lease, then resumes
    got += [push_frame(b, "survivor", f) for f in frames[6:8]]
    assert [r.frame_number for r in got] == list(range(1, 8))
    assert [r.status for r in got] == [pb.TRACKING] * 7
    np.testing.assert_allclose([xywh(r.box) for r in got], expected[:7], atol=1e-3)
    assert "event=track_resumed track_id=survivor" in (tmp_path / "b.log").read_text()

    # SIGTERM: b drains, writes state and frees the lease, so c resumes at once (no lease wait).
    assert b.terminate() == 0
    assert redis_proc.client().get("lorat:lease:{survivor}") is None
    c = ServerProc(redis_proc.url, checkpoint, tmp_path / "c.log", lease_ttl_s=1.0).start()
    try:
        got += [push_frame(c, "survivor", f) for f in frames[8:10]]
        np.testing.assert_allclose([xywh(r.box) for r in got], expected, atol=1e-3)
        assert got[-1].frame_number == 9
        info = c.stub.GetTrack(pb.GetTrackRequest(track_id="survivor"))
        lease = redis_proc.client().get("lorat:lease:{survivor}").decode()
        assert info.frames_processed == 9 and lease.startswith(info.owner + " ")
    finally:
        c.kill()


def test_redis_outage_does_not_stop_tracking(checkpoint, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    redis = RedisProc().start()
    frames, boxes = make_frames(12, 9)
    expected = reference_boxes(engine, frames, boxes[0])
    s = ServerProc(redis.url, checkpoint, tmp_path / "s.log", lease_ttl_s=1.0).start()
    try:
        s.stub.StartTrack(pb.StartTrackRequest(track_id="steady", first_frame=frame_pb(frames[0]),
                                               initial_box=box_pb(boxes[0])))
        got = [push_frame(s, "steady", f) for f in frames[1:3]]
        redis.stop()
        with ThreadPoolExecutor(1) as pool:
            # Redis is down: the frame is computed, but its result waits for its state write
            pending = pool.submit(lambda: [push_frame(s, "steady", f) for f in frames[3:6]])
            time.sleep(1.5)
            assert not pending.done(), "a result was released before its state was written"
            assert redis_health(s) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert metric_value(s.metrics_text(), "lorat_redis_errors_total") > 0
            assert metric_value(s.metrics_text(), "lorat_results_held") >= 1
            redis.start()  # same port, empty (no persistence): the server must write everything again
            got += pending.result(timeout=30)
        client = redis.client()
        assert client.hexists("lorat:track:{steady}", "template") and client.get("lorat:lease:{steady}")
        got += [push_frame(s, "steady", f) for f in frames[6:9]]
        counters = stored_counters(client, "steady")
        assert counters["frames_processed"] == 8 and counters["frames_received"] == 8
        assert [r.status for r in got] == [pb.TRACKING] * 8
        deadline = time.monotonic() + 10
        while redis_health(s) != health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
            time.sleep(0.1)
        assert redis_health(s) == health_pb2.HealthCheckResponse.SERVING
        np.testing.assert_allclose([xywh(r.box) for r in got], expected, atol=1e-3)
        assert "event=redis_back" in (tmp_path / "s.log").read_text()
    finally:
        s.kill()
        redis.stop()


def test_sigterm_finishes_queued_frames_and_writes_state(redis_proc, checkpoint, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A 10-minute batch window keeps the frame queued when SIGTERM arrives: only the drain can run it
    (no wall-clock assertion: had the drain waited for the window, terminate/result would time out), then
    answer the caller, write the state and exit 0."""
    frames, boxes = make_frames(13, 2)
    s = ServerProc(redis_proc.url, checkpoint, tmp_path / "s.log", max_batch_wait_ms=600_000).start()
    s.stub.StartTrack(pb.StartTrackRequest(track_id="queued", first_frame=frame_pb(frames[0]),
                                           initial_box=box_pb(boxes[0])))
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(push_frame, s, "queued", frames[1])
        deadline = time.monotonic() + 60  # the pushed frame is decoded (and then queued): the 2nd decode
        while metric_value(s.metrics_text(), "lorat_decode_seconds_count") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        assert s.terminate(timeout=60) == 0
        result = pending.result(timeout=10)
    assert result.status == pb.TRACKING and result.frame_number == 1
    np.testing.assert_allclose(xywh(result.box), reference_boxes(engine, frames, boxes[0])[0], atol=1e-3)
    counters = stored_counters(redis_proc.client(), "queued")
    assert counters["frames_processed"] == 1 and redis_proc.client().get("lorat:lease:{queued}") is None
    assert "event=drained" in (tmp_path / "s.log").read_text()
