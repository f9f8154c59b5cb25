"""Three real `lorat-serve` replicas on a real 3-node Redis Cluster (`--redis-cluster true`): any replica
answers any call (pushes, gets, lists and stops sent to the wrong replica are forwarded to the owner), the
replica registry (address, capacity, load; a duplicate --instance-id refused), and a SIGKILLed replica's push
tracks resumed elsewhere with the boxes of an uninterrupted run. Results go to per-track streams only."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from lorat.v1 import tracker_pb2 as pb
from redis.cluster import RedisCluster

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
from .procs import CLUSTER_REPLICA, cluster_trio


@pytest.fixture(scope="module")
def trio(cluster, checkpoint, tmp_path_factory):  # type: ignore[no-untyped-def]
    with cluster_trio(cluster.url, checkpoint, tmp_path_factory.mktemp("replicas")) as servers:
        yield servers


@pytest.fixture(scope="module")
def seq(engine):  # type: ignore[no-untyped-def]
    frames, boxes = make_frames(11, 10)
    return frames, boxes, reference_boxes(engine, frames, boxes[0])


def test_registry_lists_every_replica_and_refuses_a_duplicate_id(trio, cluster, checkpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    nodes = RedisCluster.from_url(cluster.url)
    try:
        assert {m.decode() for m in nodes.smembers("lorat:replicas")} == {"a", "b", "c"}
        entry = nodes.hgetall("lorat:replica:{a}")
        assert entry[b"address"].decode() == f"127.0.0.1:{trio['a'].port}"
        assert int(entry[b"capacity"]) == 256 and len(entry[b"nonce"]) == 12
    finally:
        nodes.close()
    dup = ServerProc(cluster.url, checkpoint, tmp_path / "dup.log", instance_id="a", **CLUSTER_REPLICA)
    with pytest.raises(RuntimeError, match="exited 1"):
        dup.start()
    assert "instance id 'a' is registered by another live server" in (tmp_path / "dup.log").read_text()
    assert trio["a"].stub.ListTracks(pb.ListTracksRequest(), timeout=10) is not None  # the first one serves on


def test_any_replica_answers_any_call(trio, seq) -> None:  # type: ignore[no-untyped-def]
    frames, boxes, expected = seq
    ids = {"w-a1": "a", "w-a2": "a", "w-b1": "b", "w-c1": "c"}
    for tid, owner in ids.items():
        trio[owner].stub.StartTrack(pb.StartTrackRequest(track_id=tid, first_frame=frame_pb(frames[0]),
                                                         initial_box=box_pb(boxes[0])), timeout=30)
    order = ["a", "b", "c"]
    got: dict[str, list[pb.TrackResult]] = {tid: [] for tid in ids}
    for k in range(1, 6):  # round robin over the replicas, like a balancer: most calls hit a non-owner
        for j, tid in enumerate(ids):
            got[tid].append(push_frame(trio[order[(k + j) % 3]], tid, frames[k]))
    for tid in ids:
        np.testing.assert_allclose([xywh(r.box) for r in got[tid]], expected[:5], atol=1e-3)
        assert [r.frame_number for r in got[tid]] == [1, 2, 3, 4, 5]
    for name, server in trio.items():  # every track stayed with its owner: nothing moved
        held = {t.track_id for t in server.stub.ListTracks(pb.ListTracksRequest(), timeout=10).tracks}
        assert set(ids) <= held, name  # the list of every replica's tracks, from any replica
        info = server.stub.GetTrack(pb.GetTrackRequest(track_id="w-a1"), timeout=10)
        assert info.owner == "a" and info.frames_processed == 5
    stopped = trio["c"].stub.StopTrack(pb.StopTrackRequest(track_id="w-a2"), timeout=10)
    assert stopped.status == pb.STOPPED and stopped.owner == "a"
    with pytest.raises(grpc.RpcError) as err:
        push_frame(trio["b"], "w-a2", frames[6])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    forwarded = sum(metric_value(s.metrics_text(), "lorat_forwarded_calls_total") for s in trio.values())
    assert forwarded >= 12


def test_sigkill_a_replica_its_push_tracks_continue_elsewhere(trio, seq, cluster) -> None:  # type: ignore[no-untyped-def]
    frames, _, expected = seq
    trio["a"].kill()  # SIGKILL: its leases lapse after lease_ttl_s, its registry entry after its TTL
    r = push_frame(trio["b"], "w-a1", frames[6], retry_s=15)
    rest = [r] + [push_frame(trio["c" if k % 2 else "b"], "w-a1", frames[k]) for k in range(7, 10)]
    np.testing.assert_allclose([xywh(x.box) for x in rest], expected[5:9], atol=1e-3)
    assert trio["c"].stub.GetTrack(pb.GetTrackRequest(track_id="w-a1"), timeout=10).owner == "b"
    nodes = RedisCluster.from_url(cluster.url)
    try:
        for tid in ("w-a1", "w-b1", "w-c1"):  # per-track result streams on the cluster; no all-tracks hot key
            assert nodes.xlen(f"lorat:results:{tid}") >= 5
            assert nodes.pttl(f"lorat:results:{tid}") > 0
        assert not nodes.exists("lorat:results")
    finally:
        nodes.close()
    for name in ("b", "c"):
        assert metric_value(trio[name].metrics_text(), "lorat_redis_errors_total") == 0
