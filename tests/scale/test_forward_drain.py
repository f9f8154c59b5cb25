"""A replica SIGTERMed while it forwards a push to a busy owner finishes that call instead of cutting it.

Two real `lorat-serve` replicas on a real Redis; the owner is SIGSTOPped (a busy or paused process) while
the other replica, the one the caller reached, waits for it. Before the drain waited for calls in flight,
the gRPC server's 2 s stop grace cancelled such a call: the caller read CANCELLED, which says "you gave
up", while the owner went on to apply the frame. Now the call is answered with the owner's result when the
owner comes back within --drain-timeout-s, else UNAVAILABLE, and the retry with the same push id gets the
owner's result: the frame is applied once either way.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest
from lorat.v1 import tracker_pb2 as pb

from ..service.conftest import RedisProc, ServerProc, box_pb, frame_pb, make_frames, push_encoded


@pytest.fixture
def pair(checkpoint: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    redis = RedisProc().start()
    servers = [ServerProc(redis.url, checkpoint, tmp_path / f"{name}.log", instance_id=name, http_port=-1,
                          drain_timeout_s=drain) for name, drain in (("owner", 30), ("front", 6))]
    try:
        for s in servers:
            s.start()
        yield servers
    finally:
        for s in servers:
            if s.proc is not None and s.proc.poll() is None:
                os.kill(s.proc.pid, signal.SIGCONT)
            s.kill()
        redis.stop()


def _push_in_background(server: ServerProc, track_id: str, frame: pb.Frame, push_id: str) -> tuple:
    outcome: dict = {}

    def call() -> None:
        try:
            outcome["result"] = server.stub.PushFrame(pb.PushFrameRequest(track_id=track_id, frame=frame),
                                                      metadata=(("lorat-push-id", push_id),), timeout=60)
        except grpc.RpcError as exc:
            outcome["error"] = (exc.code(), exc.details())

    thread = threading.Thread(target=call)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("owner_back_after_s", [3.0, 10.0])
def test_a_forwarded_push_outlives_its_replicas_sigterm(pair, owner_back_after_s: float) -> None:  # type: ignore[no-untyped-def]
    owner, front = pair
    frames, boxes = make_frames(5, 4)
    encoded = [frame_pb(f) for f in frames]
    owner.stub.StartTrack(pb.StartTrackRequest(track_id="fd", first_frame=encoded[0], initial_box=box_pb(boxes[0])),
                          timeout=30)
    assert push_encoded(front, "fd", encoded[1], retry_s=10).frame_number == 1  # forwarded: the channel is up
    assert owner.proc is not None and front.proc is not None
    os.kill(owner.proc.pid, signal.SIGSTOP)
    thread, outcome = _push_in_background(front, "fd", encoded[2], "fd-2")
    time.sleep(1.0)  # the forwarded call now waits for the stopped owner
    front.proc.send_signal(signal.SIGTERM)
    time.sleep(owner_back_after_s)
    os.kill(owner.proc.pid, signal.SIGCONT)
    assert front.proc.wait(30) == 0
    thread.join(30)
    if owner_back_after_s < 6:  # within the front's --drain-timeout-s: the owner's answer came through
        assert "error" not in outcome, outcome
        assert outcome["result"].frame_number == 2 and outcome["result"].status == pb.TRACKING
    else:  # the front stopped waiting: UNAVAILABLE (retry), never CANCELLED
        assert outcome.get("error", (None,))[0] == grpc.StatusCode.UNAVAILABLE, outcome
        assert "retry" in outcome["error"][1], outcome  # answered by the drain, not by grpc's cancel-all
    # Either way the owner applied the frame once: the retry with its push id gets frame 2, the next push 3.
    assert push_encoded(owner, "fd", encoded[2], retry_s=10, push_id="fd-2").frame_number == 2
    assert push_encoded(owner, "fd", encoded[3], retry_s=10, push_id="fd-3").frame_number == 3
