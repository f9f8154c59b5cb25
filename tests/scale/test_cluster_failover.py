"""A Redis Cluster master failover under a pushing track: the master holding the track's slot is killed
(SIGKILL), its replica is promoted, and the track goes on with the boxes of an uninterrupted run."""

from __future__ import annotations

import numpy as np
import pytest
from lorat.v1 import tracker_pb2 as pb
from redis.cluster import RedisCluster

from ..service.conftest import ServerProc, box_pb, frame_pb, make_frames, metric_value, reference_boxes, xywh
from .cluster import RedisClusterProc


@pytest.fixture
def ha_cluster():  # type: ignore[no-untyped-def]
    c = RedisClusterProc(masters=3, replicas=1).start()
    yield c
    c.stop()


def test_master_failover_is_survived(ha_cluster, checkpoint, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    frames, boxes = make_frames(7, 9)
    expected = reference_boxes(engine, frames, boxes[0])
    s = ServerProc(ha_cluster.url, checkpoint, tmp_path / "s.log", instance_id="s", redis_cluster="true",
                   lease_ttl_s=3.0, max_batch_wait_ms=5, http_port=-1).start()
    try:
        s.stub.StartTrack(pb.StartTrackRequest(track_id="ha", first_frame=frame_pb(frames[0]),
                                               initial_box=box_pb(boxes[0])), timeout=30)
        got = [s.stub.PushFrame(pb.PushFrameRequest(track_id="ha", frame=frame_pb(frames[k])), timeout=30)
               for k in (1, 2, 3)]
        nodes = RedisCluster.from_url(ha_cluster.url)
        try:
            master = nodes.get_node_from_key("lorat:track:{ha}").port
        finally:
            nodes.close()
        ha_cluster.kill(master)
        # Frames pushed at once, while the slot has no master: their results wait for their state writes.
        got += [s.stub.PushFrame(pb.PushFrameRequest(track_id="ha", frame=frame_pb(frames[k])), timeout=60)
                for k in range(4, 9)]
        ha_cluster.wait_ok()
        assert master not in ha_cluster.masters()  # a replica took the slots over
        assert metric_value(s.metrics_text(), "lorat_redis_errors_total") > 0  # the outage was real
        np.testing.assert_allclose([xywh(r.box) for r in got], expected, atol=1e-3)
        assert [r.frame_number for r in got] == list(range(1, 9))
        info = s.stub.GetTrack(pb.GetTrackRequest(track_id="ha"), timeout=10)
        assert info.status == pb.TRACKING and info.owner == "s" and info.frames_processed == 8
    finally:
        s.kill()
