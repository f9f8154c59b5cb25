"""The service end to end: real gRPC server process, real Redis, tiny model from a checkpoint file."""

from __future__ import annotations

import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from lorat.v1 import tracker_pb2 as pb

from .conftest import box_pb, frame_pb, make_frames, metric_value, reference_boxes, xywh

EVERY = pb.TrackOptions(overload_policy=pb.EVERY_FRAME)


def _start(stub, track_id, frame, box, options=EVERY):  # type: ignore[no-untyped-def]
    return stub.StartTrack(pb.StartTrackRequest(track_id=track_id, first_frame=frame_pb(frame),
                                                initial_box=box_pb(box), options=options))


def _code(fn) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code()


def test_concurrent_tracks_match_the_engine_and_batch(server, engine) -> None:  # type: ignore[no-untyped-def]
    stub = server.stub
    before = server.metrics_text()
    n_tracks, n_frames = 4, 7
    seqs = [make_frames(seed, n_frames) for seed in range(n_tracks)]
    for i, (frames, boxes) in enumerate(seqs):
        resp = _start(stub, f"conc-{i}", frames[0], boxes[0])
        assert resp.track_id == f"conc-{i}" and resp.first_result.frame_number == 0
        np.testing.assert_allclose(xywh(resp.first_result.box), boxes[0], atol=1e-6)

    def run(i: int) -> list[pb.TrackResult]:
        frames, _ = seqs[i]
        return [stub.PushFrame(pb.PushFrameRequest(track_id=f"conc-{i}", frame=frame_pb(f, pts=100 + k)))
                for k, f in enumerate(frames[1:])]

    with ThreadPoolExecutor(n_tracks) as pool:
        outs = list(pool.map(run, range(n_tracks)))
    for i, results in enumerate(outs):
        frames, boxes = seqs[i]
        assert [r.status for r in results] == [pb.TRACKING] * (n_frames - 1)
        assert [r.frame_number for r in results] == list(range(1, n_frames))
        assert [r.source_pts for r in results] == list(range(100, 100 + n_frames - 1))
        assert all(r.track_id == f"conc-{i}" and r.model_id.startswith("tiny@") for r in results)
        got = np.array([xywh(r.box) for r in results])
        # Each track follows its own object: exactly what the engine does on that track's frames alone.
        np.testing.assert_allclose(got, reference_boxes(engine, frames, boxes[0]), atol=1e-3)
    after = server.metrics_text()
    batches = metric_value(after, "lorat_batch_size_count") - metric_value(before, "lorat_batch_size_count")
    singles = (metric_value(after, "lorat_batch_size_bucket", 'le="1.0"')
               - metric_value(before, "lorat_batch_size_bucket", 'le="1.0"'))
    frames_done = metric_value(after, "lorat_batch_size_sum") - metric_value(before, "lorat_batch_size_sum")
    assert frames_done == n_tracks * (n_frames - 1)
    assert batches - singles > 0, "no batch larger than one formed"
    assert frames_done / batches > 1.5
    infos = {t.track_id: t for t in stub.ListTracks(pb.ListTracksRequest()).tracks}
    assert infos["conc-0"].frames_processed == n_frames - 1
    for i in range(n_tracks):
        stub.StopTrack(pb.StopTrackRequest(track_id=f"conc-{i}"))


def test_every_error_has_its_status_and_spares_other_tracks(server, engine) -> None:  # type: ignore[no-untyped-def]
    stub = server.stub
    frames, boxes = make_frames(7, 6)
    _start(stub, "healthy", frames[0], boxes[0])
    ok = [stub.PushFrame(pb.PushFrameRequest(track_id="healthy", frame=frame_pb(frames[1])))]

    bad_box = pb.StartTrackRequest(track_id="bad", first_frame=frame_pb(frames[0]),
                                   initial_box=pb.Box(x=1, y=1, width=-5, height=4))
    assert _code(lambda: stub.StartTrack(bad_box)) == grpc.StatusCode.INVALID_ARGUMENT
    off = pb.StartTrackRequest(track_id="bad", first_frame=frame_pb(frames[0]),
                               initial_box=pb.Box(x=5000, y=5000, width=10, height=10))
    assert _code(lambda: stub.StartTrack(off)) == grpc.StatusCode.INVALID_ARGUMENT
    bad_id = pb.StartTrackRequest(track_id="no spaces", first_frame=frame_pb(frames[0]), initial_box=box_pb(boxes[0]))
    assert _code(lambda: stub.StartTrack(bad_id)) == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(lambda: _start(stub, "healthy", frames[0], boxes[0])) == grpc.StatusCode.ALREADY_EXISTS

    garbage = pb.PushFrameRequest(track_id="healthy", frame=pb.Frame(encoded=b"\xff\xd8 not a jpeg"))
    assert _code(lambda: stub.PushFrame(garbage)) == grpc.StatusCode.INVALID_ARGUMENT
    raw = pb.RawImage(format=pb.RawImage.RGB24, width=160, height=120, data=b"\0" * 1000)
    wrong = pb.PushFrameRequest(track_id="healthy", frame=pb.Frame(raw=raw))
    assert _code(lambda: stub.PushFrame(wrong)) == grpc.StatusCode.INVALID_ARGUMENT
    empty = pb.PushFrameRequest(track_id="healthy", frame=pb.Frame())
    assert _code(lambda: stub.PushFrame(empty)) == grpc.StatusCode.INVALID_ARGUMENT
    huge = pb.PushFrameRequest(track_id="healthy", frame=pb.Frame(encoded=b"\0" * 1_200_000))
    assert _code(lambda: stub.PushFrame(huge)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    big = np.zeros((481, 200, 3), np.uint8)
    assert _code(lambda: stub.PushFrame(pb.PushFrameRequest(track_id="healthy", frame=frame_pb(big)))) \
        == grpc.StatusCode.RESOURCE_EXHAUSTED
    unknown = pb.PushFrameRequest(track_id="nobody", frame=frame_pb(frames[1]))
    assert _code(lambda: stub.PushFrame(unknown)) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: stub.GetTrack(pb.GetTrackRequest(track_id="nobody"))) == grpc.StatusCode.NOT_FOUND
    malformed = pb.PushFrameRequest(track_id="x" * 500, frame=frame_pb(frames[1]))
    assert _code(lambda: stub.PushFrame(malformed)) == grpc.StatusCode.INVALID_ARGUMENT

    _start(stub, "to-stop", frames[0], boxes[0])
    stopped = stub.StopTrack(pb.StopTrackRequest(track_id="to-stop"))
    assert stopped.status == pb.STOPPED
    to_stopped = pb.PushFrameRequest(track_id="to-stop", frame=frame_pb(frames[1]))
    assert _code(lambda: stub.PushFrame(to_stopped)) == grpc.StatusCode.FAILED_PRECONDITION

    # Track cap (8 on this server): fill it, the next start is refused, stopping one frees a slot.
    held = len(stub.ListTracks(pb.ListTracksRequest()).tracks)
    extra = [f"cap-{i}" for i in range(8 - held)]
    for tid in extra:
        _start(stub, tid, frames[0], boxes[0])
    assert _code(lambda: _start(stub, "one-too-many", frames[0], boxes[0])) == grpc.StatusCode.RESOURCE_EXHAUSTED
    for tid in extra:
        stub.StopTrack(pb.StopTrackRequest(track_id=tid))

    # The healthy track went on as if nothing happened: same boxes as the engine alone.
    ok += [stub.PushFrame(pb.PushFrameRequest(track_id="healthy", frame=frame_pb(f))) for f in frames[2:]]
    assert [r.status for r in ok] == [pb.TRACKING] * 5
    np.testing.assert_allclose([xywh(r.box) for r in ok], reference_boxes(engine, frames, boxes[0]), atol=1e-3)
    info = stub.GetTrack(pb.GetTrackRequest(track_id="healthy"))
    assert info.frames_processed == 5 and info.frames_dropped["decode_error"] == 4
    stub.StopTrack(pb.StopTrackRequest(track_id="healthy"))


def test_stream_watch_and_h264(server) -> None:  # type: ignore[no-untyped-def]
    import av

    stub = server.stub
    frames, boxes = make_frames(3, 6)
    watch = stub.WatchTracks(pb.WatchTracksRequest(track_ids=["h264"]))
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = 160, 120, "yuv420p"
    enc.options = {"tune": "zerolatency", "preset": "ultrafast"}
    enc.open()
    units = []
    for f in frames:
        packets = enc.encode(av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p"))
        units.append(b"".join(bytes(p) for p in packets))
    assert all(units)
    first = pb.Frame(h264=units[0])
    stub.StartTrack(pb.StartTrackRequest(track_id="h264", first_frame=first, initial_box=box_pb(boxes[0]),
                                         options=EVERY))
    reqs = [pb.PushFrameRequest(track_id="h264", frame=pb.Frame(h264=u, pts=k + 1)) for k, u in enumerate(units[1:])]
    reqs.insert(2, pb.PushFrameRequest(track_id="h264", frame=pb.Frame(encoded=b"junk")))
    results = list(stub.PushFrames(iter(reqs)))
    assert [r.status for r in results] == [pb.TRACKING] * 2 + [pb.DROPPED] + [pb.TRACKING] * 3
    assert results[2].drop_reason == "decode_error" and "JPEG" in results[2].message
    assert [r.frame_number for r in results if r.status == pb.TRACKING] == [1, 2, 3, 4, 5]
    seen = [next(watch) for _ in range(6)]  # the start result, then five tracked frames
    watch.cancel()
    assert [r.frame_number for r in seen] == [0, 1, 2, 3, 4, 5]
    replay = stub.WatchTracks(pb.WatchTracksRequest(track_ids=["h264"], from_frame=4))
    assert [next(replay).frame_number for _ in range(2)] == [4, 5]
    replay.cancel()
    unknown = iter([pb.PushFrameRequest(track_id="nobody", frame=frame_pb(frames[0]))])
    assert _code(lambda: list(stub.PushFrames(unknown))) == grpc.StatusCode.NOT_FOUND
    stub.StopTrack(pb.StopTrackRequest(track_id="h264"))


def test_health_reflection_and_metrics_lint(server) -> None:  # type: ignore[no-untyped-def]
    health = health_pb2_grpc.HealthStub(server.channel)
    # Readiness is NOT_SERVING while the server holds --max-tracks (8 here) tracks; earlier tests' tracks may
    # still be ending, so wait for it (a server that never becomes ready fails here).
    deadline = time.monotonic() + 30
    serving = health_pb2.HealthCheckResponse.SERVING
    while (status := health.Check(health_pb2.HealthCheckRequest(service="")).status) != serving:
        assert time.monotonic() < deadline, (status, [t.track_id for t in server.stub.ListTracks(
            pb.ListTracksRequest()).tracks])
        time.sleep(0.1)
    refl = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    resp = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in resp.list_services_response.service}
    assert {"lorat.v1.Tracker", "grpc.health.v1.Health"} <= names

    stub = server.stub
    frames, boxes = make_frames(5, 3)
    _start(stub, "metered", frames[0], boxes[0])
    stub.PushFrame(pb.PushFrameRequest(track_id="metered", frame=frame_pb(frames[1])))
    text = server.metrics_text()
    assert 'lorat_track_frames_processed_total{track_id="metered"} 1.0' in text
    for name in ("lorat_decode_seconds_bucket", "lorat_queue_wait_seconds_bucket", "lorat_batch_forward_seconds_bucket",
                 "lorat_frame_age_seconds_bucket", "lorat_frames_processed_total", "lorat_active_tracks"):
        assert name in text
    assert metric_value(text, "lorat_frames_dropped_total", 'reason="decode_error"') >= 1
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    lint = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()
    stub.StopTrack(pb.StopTrackRequest(track_id="metered"))
    assert 'track_id="metered"' not in server.metrics_text()  # per-track series end with the track


def test_overload_policies_report_every_drop(server) -> None:  # type: ignore[no-untyped-def]
    """Server batch wait is 40 ms: frames streamed faster than that supersede each other (latest), and a
    fifo age budget of 1 ms is always exceeded (too_old). Every frame gets exactly one result."""
    stub = server.stub
    frames, boxes = make_frames(9, 11)
    _start(stub, "latest", frames[0], boxes[0], pb.TrackOptions(overload_policy=pb.LATEST))
    reqs = [pb.PushFrameRequest(track_id="latest", frame=frame_pb(f, pts=k)) for k, f in enumerate(frames[1:])]
    results = list(stub.PushFrames(iter(reqs)))
    assert [r.source_pts for r in results] == list(range(10))  # one result per frame, in order
    assert {r.status for r in results} <= {pb.TRACKING, pb.DROPPED}
    dropped = [r for r in results if r.status == pb.DROPPED]
    assert dropped and all(r.drop_reason == "superseded" for r in dropped)
    assert results[-1].status == pb.TRACKING  # the newest frame always wins
    info = stub.GetTrack(pb.GetTrackRequest(track_id="latest"))
    assert info.frames_dropped["superseded"] == len(dropped) and info.frames_processed == 10 - len(dropped)

    fifo = pb.TrackOptions(overload_policy=pb.FIFO, max_frame_age_seconds=0.001, max_queue=4)
    _start(stub, "fifo", frames[0], boxes[0], fifo)
    r = stub.PushFrame(pb.PushFrameRequest(track_id="fifo", frame=frame_pb(frames[1])))
    assert r.status == pb.DROPPED and r.drop_reason == "too_old" and r.frame_number == 1
    np.testing.assert_allclose(xywh(r.box), boxes[0], atol=1e-6)  # a drop carries the last known box
    text = server.metrics_text()
    assert metric_value(text, "lorat_frames_dropped_total", 'reason="too_old"') >= 1
    assert metric_value(text, "lorat_track_frames_dropped_total", 'track_id="fifo"') == 1
    for tid in ("latest", "fifo"):
        stub.StopTrack(pb.StopTrackRequest(track_id=tid))
