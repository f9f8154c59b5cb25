"""Camera (RTSP) tracks of a SIGKILLed replica are adopted by the others from the camera-track index
(server/placement.py), spread by free capacity rather than grabbed by whoever scans first; a new camera
track sent to a replica with little room starts on the rendezvous winner among roomier ones; a replica at
--max-tracks reads NOT_SERVING on its readiness service. Real parts: a GStreamer RTSP server, a 3-node
Redis Cluster, three `lorat-serve` replicas. No wall-clock assertion: deadlines are generous (the time to
adopt is measured in bench/scale.py)."""

from __future__ import annotations

import collections
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lorat.v1 import tracker_pb2 as pb
from redis.cluster import RedisCluster

from server.placement import ranking

from ..service.conftest import ServerProc, box_pb, frame_pb, make_frames
from .procs import CLUSTER_REPLICA

IDS = [f"cam-{i}" for i in range(6)]
SMALL = 4  # b's and c's --max-tracks: 6 orphans cannot all land on one of them


def _wait(cond, what: str, timeout: float = 150.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
            if last:
                return last
        except (grpc.RpcError, OSError) as exc:
            last = exc
        time.sleep(0.25)
    raise AssertionError(f"{what}: {last!r}")


def _own(server: ServerProc) -> dict[str, pb.TrackInfo]:
    """The tracks `server` itself holds (ListTracks lists every live replica's; keep its own)."""
    name = server.args[server.args.index("--instance-id") + 1]
    return {t.track_id: t for t in server.stub.ListTracks(pb.ListTracksRequest(), timeout=20).tracks
            if t.owner == name and t.status == pb.TRACKING}


def _ready(server: ServerProc) -> int:
    stub = health_pb2_grpc.HealthStub(server.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service="lorat.v1.Tracker"), timeout=10).status


def test_dead_replicas_camera_tracks_are_spread_over_the_others(cluster, checkpoint, rtsp_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cam = rtsp_server  # tests/rtsp's GStreamer RTSP server (a fixture of tests/scale/conftest.py)
    servers: dict[str, ServerProc] = {}
    try:
        servers["a"] = ServerProc(cluster.url, checkpoint, tmp_path / "a.log", instance_id="a", max_tracks=8,
                                  **CLUSTER_REPLICA).start(timeout=240)
        for name in ("b", "c"):
            servers[name] = ServerProc(cluster.url, checkpoint, tmp_path / f"{name}.log", instance_id=name,
                                       max_tracks=SMALL, **CLUSTER_REPLICA).start(timeout=240)
        a, b, c = servers["a"], servers["b"], servers["c"]
        box = pb.Box(x=40, y=30, width=40, height=40)
        for tid in IDS:  # a keeps them: no other replica has twice its free room (8-k vs 4)
            a.stub.StartTrack(pb.StartTrackRequest(track_id=tid, rtsp=pb.RtspSource(url=cam.url), initial_box=box),
                              timeout=90)
        # a now has room for 2, b and c for 4 each: a new camera track sent to a starts on the rendezvous
        # winner of b and c (equal free room), forwarded there.
        placed = a.stub.StartTrack(pb.StartTrackRequest(track_id="cam-new", rtsp=pb.RtspSource(url=cam.url),
                                                        initial_box=box), timeout=90)
        assert placed.first_result.frame_number == 0
        winner = ranking("cam-new", {"b": SMALL, "c": SMALL})[0]
        assert "cam-new" in _own(servers[winner]) and "cam-new" not in _own(a)
        assert "event=track_placed track_id=cam-new replica=" + winner in (tmp_path / "a.log").read_text()
        nodes = RedisCluster.from_url(cluster.url)
        try:
            index = {k.decode(): v.decode() for k, v in nodes.hgetall("lorat:pulled").items()}
            nonce_a = nodes.hget("lorat:replica:{a}", "nonce").decode()
            assert {tid: index.get(tid, "").rsplit(" ", 1)[0] for tid in IDS} == {tid: f"a {nonce_a}" for tid in IDS}
            before = _wait(lambda: (lambda held: held if len(held) == len(IDS) and all(
                t.frames_processed > 0 for t in held.values()) else None)(_own(a)), "a never tracked its cameras")
            a.kill()
            adopted = _wait(lambda: (lambda held: held if set(held) == set(IDS) else None)(
                {tid: t for tid, t in {**_own(b), **_own(c)}.items() if tid in IDS}),
                "the dead replica's camera tracks were not all adopted")
            owners = collections.Counter(t.owner for t in adopted.values())
            assert set(owners) == {"b", "c"}, owners  # spread over both, not grabbed by one
            owners[winner] += 1  # with cam-new, neither went over its --max-tracks
            assert max(owners.values()) <= SMALL, owners
            for tid in IDS:  # numbering goes on from the stored state, on the new owner
                _wait(lambda tid=tid: {**_own(b), **_own(c)}[tid].frames_processed > before[tid].frames_processed,
                      f"{tid} does not track on its new owner")
            index = {k.decode(): v.decode() for k, v in nodes.hgetall("lorat:pulled").items()}
            for tid, info in adopted.items():  # the index names the adopter and its boot nonce
                nonce = nodes.hget(f"lorat:replica:{{{info.owner}}}", "nonce").decode()
                assert index[tid].rsplit(" ", 1)[0] == f"{info.owner} {nonce}", (tid, index[tid])
            logs = (tmp_path / "b.log").read_text() + (tmp_path / "c.log").read_text()
            assert sum(f"event=track_adopted track_id={tid} " in logs for tid in IDS) == len(IDS)
        finally:
            nodes.close()

        # Readiness reflects a full replica: fill the emptier one up to --max-tracks with push tracks.
        emptier = min((b, c), key=lambda s: len(_own(s)))
        frames, boxes = make_frames(3, 1)
        extra = []
        assert _ready(emptier) == health_pb2.HealthCheckResponse.SERVING
        while len(_own(emptier)) < SMALL:
            tid = f"fill-{len(extra)}"
            emptier.stub.StartTrack(pb.StartTrackRequest(track_id=tid, first_frame=frame_pb(frames[0]),
                                                         initial_box=box_pb(boxes[0])), timeout=60)
            extra.append(tid)
        _wait(lambda: _ready(emptier) == health_pb2.HealthCheckResponse.NOT_SERVING, "a full replica reads ready")
        emptier.stub.StopTrack(pb.StopTrackRequest(track_id=extra[-1]), timeout=30)
        _wait(lambda: _ready(emptier) == health_pb2.HealthCheckResponse.SERVING, "readiness did not come back")
    finally:
        for s in servers.values():
            s.kill()
