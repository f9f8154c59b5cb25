"""A rolling restart on a Redis Cluster: three replicas, 12 tracks pushing continuously through a
round-robin "balancer", each replica SIGTERMed and restarted in turn. No frame is answered with an error
other than UNAVAILABLE (retried), no track is lost, every track's boxes equal an uninterrupted run."""

from __future__ import annotations

import itertools
import threading
import time

import grpc
import numpy as np
from lorat.v1 import tracker_pb2 as pb
from redis.cluster import RedisCluster

from ..service.conftest import ServerProc, box_pb, frame_pb, make_frames, push_encoded, reference_boxes, xywh

COMMON = dict(redis_cluster="true", lease_ttl_s=2.0, max_batch_wait_ms=5, http_port=-1, drain_timeout_s=5)
TRACKS = 12
FRAMES = 120


def test_rolling_restart_loses_no_track_and_no_frame(cluster, checkpoint, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    frames, boxes = make_frames(3, FRAMES)
    encoded = [frame_pb(f) for f in frames]
    expected = reference_boxes(engine, frames, boxes[0])
    names = ["r1", "r2", "r3"]
    live = {n: ServerProc(cluster.url, checkpoint, tmp_path / f"{n}-0.log", instance_id=n, **COMMON).start()
            for n in names}
    lock = threading.Lock()
    for i in range(TRACKS):
        live[names[i % 3]].stub.StartTrack(pb.StartTrackRequest(
            track_id=f"roll-{i}", first_frame=encoded[0], initial_box=box_pb(boxes[0])), timeout=30)
    done = threading.Event()
    results: dict[str, list[pb.TrackResult]] = {f"roll-{i}": [] for i in range(TRACKS)}
    errors: list[str] = []
    retried = [0]

    def pusher(tid: str, start: int) -> None:
        turn = itertools.count(start)
        k = 1
        while k < FRAMES and not done.is_set():
            with lock:
                servers = list(live.values())
            server = servers[next(turn) % len(servers)]
            try:
                r = server.stub.PushFrame(pb.PushFrameRequest(track_id=tid, frame=encoded[k]), timeout=30,
                                          metadata=(("lorat-push-id", f"{tid}-{k}"),))  # as the SDK does
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    retried[0] += 1
                    time.sleep(0.05)
                    continue
                errors.append(f"{tid} frame {k}: {exc.code().name} {exc.details()}")
                return
            except ValueError:  # the harness closed that replica's channel (it is restarting): not an answer
                continue
            results[tid].append(r)
            k += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=pusher, args=(tid, i)) for i, tid in enumerate(results)]
    for t in threads:
        t.start()
    try:
        for gen, name in enumerate(names, start=1):
            time.sleep(1.0)
            with lock:
                old = live.pop(name)
            assert old.terminate(timeout=30) == 0
            new = ServerProc(cluster.url, checkpoint, tmp_path / f"{name}-{gen}.log", instance_id=name, **COMMON)
            new.start()
            with lock:
                live[name] = new
        time.sleep(1.0)
        done.set()
        for t in threads:
            t.join(120)
        assert not errors, errors[:5]
        for tid, got in results.items():
            n = len(got)
            assert n > 5, tid
            assert [r.frame_number for r in got] == list(range(1, n + 1)), tid  # no frame lost or repeated
            np.testing.assert_allclose([xywh(r.box) for r in got], expected[:n], atol=1e-3, err_msg=tid)
        nodes = RedisCluster.from_url(cluster.url)
        try:  # no track lost: each one is live in Redis and takes its next frame on any replica
            for i, (tid, got) in enumerate(results.items()):
                assert nodes.hget(f"lorat:track:{{{tid}}}", "status") == b"TRACKING", tid
                n = len(got)
                if n < FRAMES - 1:
                    server = list(live.values())[i % 3]
                    r = push_encoded(server, tid, encoded[n + 1], retry_s=20)
                    assert r.frame_number == n + 1, tid
                    np.testing.assert_allclose(xywh(r.box), expected[n], atol=1e-3, err_msg=tid)
        finally:
            nodes.close()
    finally:
        done.set()
        for s in live.values():
            s.kill()
