"""Real `lorat-serve` replicas on a real 3-node Redis Cluster (`--redis-cluster true`): tracks on
different replicas, a SIGKILLed replica's push track resumed on another one
with the boxes of an uninterrupted run, results in per-track streams, nothing CROSSSLOT."""

from __future__ import annotations

import time

import grpc
import numpy as np
from lorat.v1 import tracker_pb2 as pb
from redis.cluster import RedisCluster

from ..service.conftest import ServerProc, box_pb, frame_pb, make_frames, metric_value, reference_boxes, xywh


def _push(server: ServerProc, track_id: str, frame: np.ndarray, retry_s: float = 0.0) -> pb.TrackResult:
    deadline = time.monotonic() + retry_s
    while True:
        try:
            return server.stub.PushFrame(pb.PushFrameRequest(track_id=track_id, frame=frame_pb(frame)), timeout=30)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_replicas_share_tracks_on_a_redis_cluster(cluster, checkpoint, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    frames, boxes = make_frames(11, 9)
    expected = reference_boxes(engine, frames, boxes[0])
    common = dict(redis_cluster="true", lease_ttl_s=1.0, max_batch_wait_ms=5, http_port=-1)
    a = ServerProc(cluster.url, checkpoint, tmp_path / "a.log", instance_id="a", **common).start()
    b = ServerProc(cluster.url, checkpoint, tmp_path / "b.log", instance_id="b", **common).start()
    ids = [f"cl-{i}" for i in range(6)]  # spread over the three masters' slots
    try:
        for i, tid in enumerate(ids):
            owner = a if i % 2 == 0 else b
            owner.stub.StartTrack(pb.StartTrackRequest(track_id=tid, first_frame=frame_pb(frames[0]),
                                                       initial_box=box_pb(boxes[0])), timeout=30)
        got = {tid: [_push(a if i % 2 == 0 else b, tid, frames[k]) for k in (1, 2, 3)] for i, tid in enumerate(ids)}
        for tid in ids:
            np.testing.assert_allclose([xywh(r.box) for r in got[tid]], expected[:3], atol=1e-3)
        a.kill()  # SIGKILL: its leases lapse after lease_ttl_s
        for i, tid in enumerate(ids):  # a's tracks continue on b from Redis once a's leases lapse
            got[tid] += [_push(b, tid, frames[k], retry_s=15 if i % 2 == 0 else 0) for k in range(4, 9)]
        for tid in ids:  # identical boxes to an uninterrupted run, on both kinds of track
            np.testing.assert_allclose([xywh(r.box) for r in got[tid]], expected, atol=1e-3)
        assert metric_value(b.metrics_text(), "lorat_redis_errors_total") == 0
        nodes = RedisCluster.from_url(cluster.url)
        try:
            for tid in ids:  # per-track result streams on the cluster; no all-tracks hot key
                assert nodes.xlen(f"lorat:results:{tid}") >= 6
                assert nodes.pttl(f"lorat:results:{tid}") > 0
            assert not nodes.exists("lorat:results")
        finally:
            nodes.close()
    finally:
        a.kill()
        b.kill()

