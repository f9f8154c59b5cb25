"""Everything ends: idle push tracks are stopped, every terminal status frees the id, and after all tracks
are stopped nothing per-track remains except documented retention (TTL'd Redis keys). Supervision: a dead
or hung engine loop turns liveness NOT_SERVING and then exits."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from lorat.v1 import tracker_pb2 as pb

from server.health import Supervisor
from server.state.store import RENEW_LOST, RENEW_OK, RedisStateStore

from ..service.conftest import ServerProc, box_pb, frame_pb, make_frames


def test_a_renewal_that_crosses_its_tracks_end_does_not_revive_it(redis_proc) -> None:  # type: ignore[no-untyped-def]
    """The lease keeper's renewal is sent for every held track; when a track's end lands first, the renewal
    finds no lease. It used to take that for a lease lost in a Redis restart: it re-created the lease and put
    the live TTL (an hour) back on the ended track's hash (seen in a CI run as an ended track's hash with
    3,597,884 ms left against a 30 s retention). A drained track (hand-off, still live) is still re-taken."""
    r = redis_proc.client()

    async def go() -> None:
        store = RedisStateStore(redis_proc.url, "a", track_ttl_s=3600, lease_ttl_s=5, ended_retention_s=30)
        try:
            for tid, live in (("ended", False), ("handed-off", True)):
                claim = await store.claim(tid)
                assert claim.ok
                assert await store.save_full(tid, claim.epoch, {"source": "push"}, b"s", "TRACKING", None) == ""
                assert await store.end(tid, claim.epoch, b"s2", "TRACKING" if live else "STOPPED", live=live) == ""
                code, _ = (await store.renew([(tid, claim.epoch)]))[tid]  # sent before the end, landing after it
                if live:  # lapsed, no newer epoch: the missing-lease recovery still re-takes it
                    assert code == RENEW_OK
                    assert r.get(store.lease_key(tid)) is not None
                    assert r.pttl(store.track_key(tid)) > 30_000
                else:
                    assert code == RENEW_LOST
                    assert r.get(store.lease_key(tid)) is None
                    assert 0 < r.pttl(store.track_key(tid)) <= 30_000
                    assert r.hget(store.track_key(tid), "status") == b"STOPPED"
        finally:
            await store.close()

    asyncio.run(go())

def test_idle_tracks_end_ids_are_reused_and_nothing_per_track_remains(redis_proc, checkpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    frames, boxes = make_frames(61, 6)
    s = ServerProc(redis_proc.url, checkpoint, tmp_path / "s.log", track_idle_timeout_s=1.5,
                   ended_retention_s=30, result_stream_ttl_s=30).start()
    r = redis_proc.client()
    try:
        def start(track_id: str) -> None:
            s.stub.StartTrack(pb.StartTrackRequest(track_id=track_id, first_frame=frame_pb(frames[0]),
                                                   initial_box=box_pb(boxes[0])), timeout=30)

        for tid in ("busy", "idle", "third"):
            start(tid)
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:  # "busy" keeps pushing; "idle" and "third" do not
            s.stub.PushFrame(pb.PushFrameRequest(track_id="busy", frame=frame_pb(frames[1])), timeout=30)
            time.sleep(0.2)
        info = s.stub.GetTrack(pb.GetTrackRequest(track_id="idle"))
        assert info.status == pb.STOPPED and "idle" in info.message and "--track-idle-timeout-s" in info.message
        assert s.stub.GetTrack(pb.GetTrackRequest(track_id="busy")).status == pb.TRACKING
        assert r.get("lorat:lease:{idle}") is None  # lease freed
        with pytest.raises(grpc.RpcError) as err:
            s.stub.PushFrame(pb.PushFrameRequest(track_id="idle", frame=frame_pb(frames[1])), timeout=30)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        start("idle")  # a terminal status frees the id at once
        assert s.stub.GetTrack(pb.GetTrackRequest(track_id="idle")).status == pb.TRACKING

        for tid in ("busy", "idle"):
            s.stub.StopTrack(pb.StopTrackRequest(track_id=tid), timeout=30)
        assert s.stub.ListTracks(pb.ListTracksRequest()).tracks == []
        time.sleep(0.5)
        metrics = s.metrics_text()
        assert "track_id=" not in "\n".join(ln for ln in metrics.splitlines() if not ln.startswith("#"))
        assert list(r.scan_iter("lorat:lease:*")) == []
        patterns = ("lorat:track:*", "lorat:lease:*", "lorat:results:*")
        per_track = [k for pattern in patterns for k in r.scan_iter(pattern)]
        assert per_track  # the ended tracks' hashes and result streams
        for key in per_track:  # what remains per track is documented retention, each with its TTL
            name = key.decode()
            ttl = r.pttl(key)
            assert 0 < ttl <= 30_000, (name, ttl)
    finally:
        s.kill()


def test_supervisor_reports_a_dead_or_hung_loop_and_then_exits() -> None:
    class State:
        alive = True

        def set_alive(self, alive: bool) -> None:
            self.alive = alive

    async def run(kind: str) -> tuple[bool, list[int]]:
        exits: list[int] = []
        state = State()

        async def forever() -> None:
            await asyncio.sleep(3600)

        async def dies() -> None:
            raise RuntimeError("boom")

        task = asyncio.create_task(dies() if kind == "dead" else forever(), name="engine-loop")
        stalled_since = time.monotonic()
        sup = Supervisor(state, tasks=lambda: [task],  # type: ignore[arg-type]
                         oldest_wait=lambda: (time.monotonic() - stalled_since) if kind == "hung" else 0.0,
                         last_progress=lambda: stalled_since if kind == "hung" else time.monotonic(),
                         stall_s=0.2, grace_s=0.3, exit=exits.append)
        watcher = asyncio.create_task(sup.run())
        await asyncio.sleep(0.5)
        seen_alive = state.alive
        if kind == "ok":
            await asyncio.sleep(0.5)
        else:
            await asyncio.wait_for(watcher, 5)
        watcher.cancel()
        task.cancel()
        return seen_alive, exits

    assert asyncio.run(run("dead")) == (False, [3])
    assert asyncio.run(run("hung")) == (False, [3])
    assert asyncio.run(run("ok")) == (True, [])
