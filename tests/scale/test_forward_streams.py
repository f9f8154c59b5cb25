"""Streams from any replica, with three real `lorat-serve` replicas on a real 3-node Redis Cluster:

- a PushFrames stream opened on a replica that holds none of its tracks: the frames of tracks other replicas
  own go down a stream to each owner; results in request order, boxes of an uninterrupted run;
- WatchTracks on a replica that holds none of the watched tracks (named: their Redis result streams; all
  tracks: a fan-out to every live replica), through the SDK: every result of every track, and the final
  STOPPED result, arrive; a replay from frame 1 comes from the streams;
- GetTrack of a track whose owner was SIGKILLed and whose lease lapsed: answered from Redis (TRACKING, no
  owner, the last box and frame number), not NOT_FOUND;
- a push retried with its `lorat-push-id` is applied once: answered by the live owner from memory, and
  after the owner died by the replica that resumes the track, from the stored state; a watch on a third
  replica follows the track across its owner's death and sees each frame once.
"""

from __future__ import annotations

import queue
import threading
import time

import grpc
import numpy as np
import pytest
from lorat.v1 import tracker_pb2 as pb
from lorat_client import Client

from ..service.conftest import (
    ServerProc,
    box_pb,
    frame_pb,
    make_frames,
    metric_value,
    push_frame,
    reference_boxes,
    xywh,
)
from .procs import cluster_trio


@pytest.fixture(scope="module")
def trio(cluster, checkpoint, tmp_path_factory):  # type: ignore[no-untyped-def]
    with cluster_trio(cluster.url, checkpoint, tmp_path_factory.mktemp("fwd-streams")) as servers:
        yield servers


@pytest.fixture(scope="module")
def seq(engine):  # type: ignore[no-untyped-def]
    frames, boxes = make_frames(23, 10)
    return frames, boxes, reference_boxes(engine, frames, boxes[0])


def _start(server: ServerProc, track_id: str, frames, boxes) -> None:  # type: ignore[no-untyped-def]
    server.stub.StartTrack(pb.StartTrackRequest(track_id=track_id, first_frame=frame_pb(frames[0]),
                                                initial_box=box_pb(boxes[0]),
                                                options=pb.TrackOptions(overload_policy=pb.EVERY_FRAME)),
                           timeout=30)


def test_push_stream_to_a_replica_that_holds_none_of_its_tracks(trio, seq) -> None:  # type: ignore[no-untyped-def]
    frames, boxes, expected = seq
    owners = {"p-a": "a", "p-b": "b", "p-c": "c"}
    for tid, owner in owners.items():
        _start(trio[owner], tid, frames, boxes)
    order = [(tid, k) for k in range(1, 5) for tid in owners]  # interleaved: a, b, c, a, b, c, ...
    requests = [pb.PushFrameRequest(track_id=tid, frame=frame_pb(frames[k], pts=100 * k)) for tid, k in order]
    for via in ("c", "a"):  # c holds one of the three tracks, a another: mixed local and forwarded frames
        if via == "a":
            order = [(tid, k) for k in range(5, 7) for tid in owners]
            requests = [pb.PushFrameRequest(track_id=tid, frame=frame_pb(frames[k], pts=100 * k)) for tid, k in order]
        results = list(trio[via].stub.PushFrames(iter(requests), timeout=60))
        assert [(r.track_id, r.frame_number, r.source_pts) for r in results] == \
            [(tid, k, 100 * k) for tid, k in order]  # request order kept across owners
        for r, (_, k) in zip(results, order):
            assert r.status == pb.TRACKING
            np.testing.assert_allclose(xywh(r.box), expected[k - 1], atol=1e-3)
    for tid, owner in owners.items():  # nothing moved: each owner still holds its track
        info = trio["b"].stub.GetTrack(pb.GetTrackRequest(track_id=tid), timeout=10)
        assert info.owner == owner and info.frames_processed == 6
    forwarded = metric_value(trio["c"].metrics_text(), "lorat_forwarded_calls_total", 'method="PushFrames"')
    assert forwarded == 8  # p-a and p-b's four frames each went from c to their owners


def test_push_stream_error_from_the_owner_ends_the_stream(trio, seq) -> None:  # type: ignore[no-untyped-def]
    frames, boxes, _ = seq
    _start(trio["a"], "p-bad", frames, boxes)
    odd = frames[1][:60, :80]  # another frame size: the owner answers a DROPPED decode_error result
    requests = [pb.PushFrameRequest(track_id="p-bad", frame=frame_pb(frames[1])),
                pb.PushFrameRequest(track_id="p-bad", frame=frame_pb(np.ascontiguousarray(odd))),
                pb.PushFrameRequest(track_id="p-bad", frame=frame_pb(frames[2]))]
    results = list(trio["b"].stub.PushFrames(iter(requests), timeout=60))
    assert [(r.status, r.drop_reason) for r in results] == [(pb.TRACKING, ""), (pb.DROPPED, "decode_error"),
                                                           (pb.TRACKING, "")]
    trio["a"].stub.StopTrack(pb.StopTrackRequest(track_id="p-bad"), timeout=10)
    with pytest.raises(grpc.RpcError) as err:  # a stopped track ends the stream with its code, as direct
        list(trio["b"].stub.PushFrames(iter(requests[:1]), timeout=60))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def _collect(client: Client, ids, out: list, done: threading.Event, **kw) -> None:  # type: ignore[no-untyped-def]
    try:
        for r in client.watch(ids, **kw):
            out.append(r)
    except Exception as exc:  # surfaced by the test's assertions
        out.append(exc)
    finally:
        done.set()


def _count(path, word: str) -> int:  # type: ignore[no-untyped-def]
    return path.read_text(errors="replace").count(word)


def _wait_until(cond, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_watch_from_a_replica_that_holds_none_of_the_tracks(trio, seq) -> None:  # type: ignore[no-untyped-def]
    frames, boxes, expected = seq
    ids = {"w-a": "a", "w-b": "b"}
    for tid, owner in ids.items():
        _start(trio[owner], tid, frames, boxes)
    logs = {name: s.log_path for name, s in trio.items()}
    before = {name: _count(path, "watch_started") for name, path in logs.items()}
    client = Client(f"127.0.0.1:{trio['c'].port}", timeout=30)
    named: list = []
    everything: list = []
    named_done, all_done = threading.Event(), threading.Event()
    threads = [threading.Thread(target=_collect, args=(client, list(ids), named, named_done), daemon=True)]
    raw = trio["c"].stub.WatchTracks(pb.WatchTracksRequest(), timeout=120)  # all tracks: fan-out to a and b

    def drain_all() -> None:
        try:
            for r in raw:
                everything.append(r)
        except grpc.RpcError:
            pass
        finally:
            all_done.set()

    threads.append(threading.Thread(target=drain_all, daemon=True))
    for t in threads:
        t.start()
    _wait_until(lambda: _count(logs["c"], "watch_started") >= before["c"] + 2  # the named and the all watch
                and all(_count(logs[n], "watch_started") >= before[n] + 1 for n in "ab"),  # the fan-out's
                "the watches did not start")
    rr = ["a", "b", "c"]
    for k in range(1, 5):
        for j, tid in enumerate(ids):
            push_frame(trio[rr[(k + j) % 3]], tid, frames[k])
    trio["c"].stub.StopTrack(pb.StopTrackRequest(track_id="w-a"), timeout=10)
    trio["a"].stub.StopTrack(pb.StopTrackRequest(track_id="w-b"), timeout=10)
    assert named_done.wait(60), f"the named watch did not end: {named}"
    assert not [r for r in named if isinstance(r, Exception)], named
    for tid in ids:
        got = [r for r in named if r.track_id == tid]
        assert [(r.frame_number, r.status) for r in got] == [(1, "TRACKING"), (2, "TRACKING"), (3, "TRACKING"),
                                                             (4, "TRACKING"), (4, "STOPPED")], got
        np.testing.assert_allclose([[r.box.x, r.box.y, r.box.w, r.box.h] for r in got[:4]],
                                   expected[:4], atol=1e-3)
    _wait_until(lambda: {(r.track_id, r.status) for r in everything} >= {("w-a", pb.STOPPED), ("w-b", pb.STOPPED)},
                f"the all-tracks watch missed a STOPPED result: {[(r.track_id, r.frame_number) for r in everything]}")
    raw.cancel()
    for tid in ids:  # every result of both tracks, once each, from their owners
        assert [(r.frame_number, r.status) for r in everything if r.track_id == tid] == \
            [(1, pb.TRACKING), (2, pb.TRACKING), (3, pb.TRACKING), (4, pb.TRACKING), (4, pb.STOPPED)]
    replay = []  # after the end, on a replica that never held it: replayed from the track's stream
    for r in trio["c"].stub.WatchTracks(pb.WatchTracksRequest(track_ids=["w-b"], from_frame=1), timeout=60):
        replay.append((r.frame_number, r.status))
        if r.status == pb.STOPPED:
            break
    assert replay == [(1, pb.TRACKING), (2, pb.TRACKING), (3, pb.TRACKING), (4, pb.TRACKING), (4, pb.STOPPED)]
    client.close()


def _push_id(server: ServerProc, track_id: str, frame: np.ndarray, pid: str, retry_s: float = 0.0) -> pb.TrackResult:
    """PushFrame with a `lorat-push-id` (as the SDK sends), retrying UNAVAILABLE for up to `retry_s`."""
    deadline = time.monotonic() + retry_s
    while True:
        try:
            return server.stub.PushFrame(pb.PushFrameRequest(track_id=track_id, frame=frame_pb(frame)),
                                         metadata=(("lorat-push-id", pid),), timeout=30)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_get_track_no_replica_holds_and_a_retried_push(trio, seq) -> None:  # type: ignore[no-untyped-def]
    """GetTrack of a track whose owner died answers from Redis; a push retried with its push id is applied
    once, whether the retry reaches the live owner or, after the owner died, the replica that resumes it."""
    frames, boxes, expected = seq
    _start(trio["a"], "g-a", frames, boxes)
    before = _count(trio["b"].log_path, "watch_started")
    watch = trio["b"].stub.WatchTracks(pb.WatchTracksRequest(track_ids=["g-a"]), timeout=120)
    watched: list = []

    def follow() -> None:  # on b, which never holds g-a: its result stream, across a's death
        try:
            for r in watch:
                watched.append((r.frame_number, r.status))
                if r.status == pb.STOPPED:
                    return
        except grpc.RpcError:
            pass

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    _wait_until(lambda: _count(trio["b"].log_path, "watch_started") > before, "the watch did not start")
    got = [_push_id(trio["b"], "g-a", frames[k], f"pid-{k}") for k in range(1, 4)]
    again = _push_id(trio["c"], "g-a", frames[3], "pid-3")  # a retry to the live owner (forwarded): no new frame
    assert (again.frame_number, again.receive_time) == (3, got[2].receive_time)
    last = got[-1]
    trio["a"].kill()  # SIGKILL: nobody holds g-a once its 1 s lease lapses, and nobody pushes to resume it
    seen = []

    def lapsed() -> bool:
        info = trio["b"].stub.GetTrack(pb.GetTrackRequest(track_id="g-a"), timeout=10)
        seen.append((info.owner, info.message))
        return info.owner == ""

    _wait_until(lapsed, f"GetTrack never showed the lapsed lease: {seen[-3:]}", timeout=30)
    info = trio["c"].stub.GetTrack(pb.GetTrackRequest(track_id="g-a"), timeout=10)
    assert info.status == pb.TRACKING and info.owner == "" and info.source == "push"
    assert info.source_state == pb.SOURCE_PUSH and "no server holds" in info.message
    assert info.last_result.frame_number == 3 and info.frames_processed == 3
    np.testing.assert_allclose(xywh(info.last_result.box), xywh(last.box), atol=1e-3)
    np.testing.assert_allclose(xywh(info.last_result.box), expected[2], atol=1e-3)
    with pytest.raises(grpc.RpcError) as err:  # an id Redis never had is still NOT_FOUND
        trio["c"].stub.GetTrack(pb.GetTrackRequest(track_id="never-was"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # The caller never saw frame 3's answer (say) and retries it: c resumes the track and answers from the
    # stored state, without stepping the tracker on that picture again.
    retried = _push_id(trio["c"], "g-a", frames[3], "pid-3", retry_s=15)
    assert retried.frame_number == 3
    np.testing.assert_allclose(xywh(retried.box), xywh(last.box), atol=1e-3)
    resumed = _push_id(trio["c"], "g-a", frames[4], "pid-4")  # the next push is frame 4, boxes unchanged
    assert resumed.frame_number == 4
    np.testing.assert_allclose(xywh(resumed.box), expected[3], atol=1e-3)
    assert trio["b"].stub.GetTrack(pb.GetTrackRequest(track_id="g-a"), timeout=10).owner == "c"
    trio["b"].stub.StopTrack(pb.StopTrackRequest(track_id="g-a"), timeout=10)
    follower.join(60)
    watch.cancel()
    # every result once, from a then c, and no second frame 3 (the retries were answered, not re-applied)
    assert watched == [(1, pb.TRACKING), (2, pb.TRACKING), (3, pb.TRACKING), (4, pb.TRACKING), (4, pb.STOPPED)]


def test_push_stream_goes_on_when_its_owner_drains(trio, seq) -> None:  # type: ignore[no-untyped-def]
    """The owner of a forwarded stream's track is SIGTERMed between frames: the caller's open stream goes on
    (each frame is routed afresh: the drained track is resumed on the replica the stream reached), with the
    frame numbers and boxes of an uninterrupted run."""
    frames, boxes, expected = seq
    _start(trio["b"], "m-b", frames, boxes)
    feed: queue.Queue = queue.Queue()
    responses = trio["c"].stub.PushFrames(iter(feed.get, None), timeout=120)
    got = []
    for k in (1, 2):
        feed.put(pb.PushFrameRequest(track_id="m-b", frame=frame_pb(frames[k])))
        got.append(next(responses))
    assert trio["b"].terminate(timeout=60) == 0  # drain: the track is handed back to Redis, live, unleased
    for k in (3, 4):
        feed.put(pb.PushFrameRequest(track_id="m-b", frame=frame_pb(frames[k])))
        got.append(next(responses))
    feed.put(None)
    assert [(r.frame_number, r.status) for r in got] == [(k, pb.TRACKING) for k in (1, 2, 3, 4)]
    np.testing.assert_allclose([xywh(r.box) for r in got], expected[:4], atol=1e-3)
    assert trio["c"].stub.GetTrack(pb.GetTrackRequest(track_id="m-b"), timeout=10).owner == "c"
