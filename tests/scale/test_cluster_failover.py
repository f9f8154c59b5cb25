"""A Redis Cluster master failover under a pushing track: the master holding the track's slot is killed
(SIGKILL), its replica is promoted, and the track goes on with the boxes of an uninterrupted run.

The outage is made certain rather than hoped for: the replica is told not to fail over
(`cluster-replica-no-failover yes`) until the server has seen the dead master (its Redis error counter moved)
while a push is in flight; then the automatic failover is let go. On a loaded machine the failover can
otherwise finish before the server's next command, and redis-py's cluster client retries that command
internally, so the outage would go unseen.

In between, every live node is paused for a few seconds: the nodes of a loaded machine that do not answer
CLUSTER SLOTS within the client's socket timeout. redis-py then raises RedisClusterException, which is no
RedisError; it used to escape the state store and end the commit task, so the in-flight push was never
answered (the "push exceeded its 60 s deadline" seen when three suites ran at once).

Deadlines are generous (a loaded machine); the assertions are exact: every frame answered in order with the
boxes of an uninterrupted run."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from lorat.v1 import tracker_pb2 as pb
from redis.cluster import RedisCluster

from ..service.conftest import ServerProc, box_pb, frame_pb, make_frames, metric_value, reference_boxes, xywh
from .cluster import RedisClusterProc

PUSH_DEADLINE_S = 180.0  # one push across the whole failover on a heavily loaded 2-core machine


@pytest.fixture
def ha_cluster():  # type: ignore[no-untyped-def]
    c = RedisClusterProc(masters=3, replicas=1).start()
    yield c
    c.stop()


def _wait(cond, what: str, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    """Poll `cond` until true; a poll that fails (the metrics endpoint slow to answer on a loaded machine) is
    just polled again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.2)


def test_master_failover_is_survived(ha_cluster, checkpoint, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    frames, boxes = make_frames(7, 9)
    expected = reference_boxes(engine, frames, boxes[0])
    s = ServerProc(ha_cluster.url, checkpoint, tmp_path / "s.log", instance_id="s", redis_cluster="true",
                   lease_ttl_s=3.0, max_batch_wait_ms=5, http_port=-1).start()

    def push(k: int) -> pb.TrackResult:
        return s.stub.PushFrame(pb.PushFrameRequest(track_id="ha", frame=frame_pb(frames[k])),
                                timeout=PUSH_DEADLINE_S)

    pool = ThreadPoolExecutor(1)
    try:
        s.stub.StartTrack(pb.StartTrackRequest(track_id="ha", first_frame=frame_pb(frames[0]),
                                               initial_box=box_pb(boxes[0])), timeout=60)
        got = [push(k) for k in (1, 2, 3)]
        nodes = RedisCluster.from_url(ha_cluster.url)
        try:
            master = nodes.get_node_from_key("lorat:track:{ha}").port
        finally:
            nodes.close()
        replica = ha_cluster.replica_of(master)
        assert ha_cluster.cli(replica, "CONFIG", "SET", "cluster-replica-no-failover", "yes") == "OK"
        errors_before = metric_value(s.metrics_text(), "lorat_redis_errors_total")
        ha_cluster.kill(master)
        # Frame 4 is pushed while the slot has no master: it is computed, but its result waits for its state
        # write, which cannot succeed anywhere until a replica is promoted.
        in_flight = pool.submit(push, 4)
        _wait(lambda: metric_value(s.metrics_text(), "lorat_redis_errors_total") > errors_before,
              "the server never saw the dead master")
        assert not in_flight.done(), "a result was released while its state could not be written"
        alive = [p for p, proc in ha_cluster.procs.items() if proc.poll() is None]
        ha_cluster.pause(alive)  # no node answers CLUSTER SLOTS in time: the client's topology refresh fails
        time.sleep(4)
        ha_cluster.resume(alive)
        assert not in_flight.done(), "a result was released while its state could not be written"
        assert s.proc.poll() is None
        assert ha_cluster.cli(replica, "CONFIG", "SET", "cluster-replica-no-failover", "no") == "OK"
        got.append(in_flight.result(timeout=PUSH_DEADLINE_S))
        got += [push(k) for k in range(5, 9)]  # the first of these may still meet the failover
        ha_cluster.wait_ok(timeout=120)
        masters = ha_cluster.masters()
        assert master not in masters and replica in masters  # the replica took the slots over
        np.testing.assert_allclose([xywh(r.box) for r in got], expected, atol=1e-3)
        assert [r.frame_number for r in got] == list(range(1, 9))
        info = s.stub.GetTrack(pb.GetTrackRequest(track_id="ha"), timeout=30)
        assert info.status == pb.TRACKING and info.owner == "s" and info.frames_processed == 8
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        s.kill()
