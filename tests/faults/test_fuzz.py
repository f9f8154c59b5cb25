"""Thousands of malformed requests while a healthy track keeps going: no crash, no INTERNAL/UNKNOWN, the
healthy track's boxes identical to a run without the fuzz, and bounded memory."""

from __future__ import annotations

import collections
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from lorat.v1 import tracker_pb2 as pb

from ..service.conftest import ServerProc, box_pb, frame_pb, make_frames, xywh
from .fuzz import caller, requests
from .harness import rss_bytes

N = 1500  # bench/faults.py sends 10,000


def _track(server: ServerProc, track_id: str, frames, box0) -> list:  # type: ignore[no-untyped-def]
    server.stub.StartTrack(pb.StartTrackRequest(track_id=track_id, first_frame=frame_pb(frames[0]),
                                                initial_box=box_pb(box0)))
    out = [xywh(server.stub.PushFrame(pb.PushFrameRequest(track_id=track_id, frame=frame_pb(f)), timeout=60).box)
           for f in frames[1:]]
    server.stub.StopTrack(pb.StopTrackRequest(track_id=track_id))
    return out


def test_fuzz_while_a_healthy_track_runs(redis_proc, checkpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    frames, boxes = make_frames(41, 25)
    s = ServerProc(redis_proc.url, checkpoint, tmp_path / "s.log", max_frame_width=640, max_frame_height=480,
                   max_message_bytes=4_000_000).start()
    try:
        calm = _track(s, "calm", frames, boxes[0])  # the run without the fuzz
        call = caller(s.channel)
        body = requests(seed=7, healthy="healthy")
        with ThreadPoolExecutor(6) as pool:  # warm up: first-use allocations are not growth
            list(pool.map(lambda mb: call(*mb), itertools.islice(body, 200)))
        before = rss_bytes(s.proc.pid)
        codes: collections.Counter = collections.Counter()
        healthy: list = []
        t = threading.Thread(target=lambda: healthy.extend(_track(s, "healthy", frames, boxes[0])))
        t.start()
        with ThreadPoolExecutor(6) as pool:
            for code in pool.map(lambda mb: call(*mb), itertools.islice(body, N)):
                codes[code.name] += 1
        t.join(120)
        after = rss_bytes(s.proc.pid)
        assert s.proc.poll() is None, "the server died"
        assert codes["INTERNAL"] == 0 and codes["UNKNOWN"] == 0, codes
        assert codes["INVALID_ARGUMENT"] > N // 3, codes
        assert len(healthy) == len(calm) and all((h == c).all() for h, c in zip(healthy, calm))  # identical
        assert after < before * 1.10, (before, after)  # bench/faults.py holds 10,000 requests to 5 %
        assert s.stub.ListTracks(pb.ListTracksRequest()).tracks == []  # no fuzzed request started a track
        with_code = grpc.StatusCode.INVALID_ARGUMENT
        assert caller(s.channel)("GetTrack", b"\xff\xff\xff") == with_code  # an unparseable body
    finally:
        s.kill()
