"""`make run`'s configuration (no checkpoint, no Redis URL) follows a synthetic object for real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lorat.v1 import tracker_pb2 as pb

from lorat_infer.eval.metrics import evaluate_sequence
from lorat_infer.eval.synthetic import generate_sequence

from .conftest import ServerProc, box_pb, frame_pb, xywh


def test_server_with_no_flags_tracks_a_synthetic_video(tmp_path: Path) -> None:
    sequence = generate_sequence(9_200_003, 40)  # a seed the default model never trained on
    server = ServerProc("", "", tmp_path / "server.log").start()  # built-in model, embedded Redis
    try:
        stub = server.stub
        start = stub.StartTrack(pb.StartTrackRequest(first_frame=frame_pb(sequence.frames[0]),
                                                     initial_box=box_pb(sequence.boxes[0])))
        assert start.first_result.model_id.startswith("lorat-default@")
        boxes = [sequence.boxes[0]]
        for frame in sequence.frames[1:]:
            result = stub.PushFrame(pb.PushFrameRequest(track_id=start.track_id, frame=frame_pb(frame)))
            assert result.status == pb.TRACKING
            boxes.append(xywh(result.box))
    finally:
        server.terminate()
    metrics = evaluate_sequence(np.array(boxes), sequence.boxes)
    assert metrics.auc > 0.5, metrics.summary()
    assert "untrained_model" not in (tmp_path / "server.log").read_text()
