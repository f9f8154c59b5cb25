"""On a CPU a large batch runs as data-parallel chunks on single-threaded workers: same boxes as single
Trackers (and as one batched forward), in the batch's order; the process's thread setting is left alone."""

import numpy as np
import torch

from lorat_infer import Tracker, TrackingEngine, build_model
from lorat_infer.engine import MIN_CHUNK
from lorat_infer.eval.synthetic import generate_sequence


def test_chunked_steps_match_single_trackers_and_one_forward():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    threads = torch.get_num_threads()
    chunked = TrackingEngine(model, precision="fp32", cpu_workers=3)
    serial = TrackingEngine(model, precision="fp32", cpu_workers=1)
    assert chunked.cpu_workers == 3 and serial.cpu_workers == 1

    n = 3 * MIN_CHUNK + 1  # three uneven chunks
    seqs = [generate_sequence(seed, 4, size=(160 + 40 * (seed % 3), 120)) for seed in range(n)]
    boxes = [s.boxes[0] for s in seqs]
    trackers = [Tracker(model, precision="fp32") for _ in seqs]
    for tracker, seq in zip(trackers, seqs):
        tracker.initialize(seq.frames[0], seq.boxes[0])
    states = {e: e.initialize([s.frames[0] for s in seqs], boxes) for e in (chunked, serial)}
    for t in range(1, 4):
        frames = [s.frames[t] for s in seqs]
        arrays = {}
        for engine in (chunked, serial):
            states[engine], arrays[engine] = engine.step_arrays(states[engine], frames)
        for i, tracker in enumerate(trackers):
            box_xywh, score = tracker.track(frames[i])
            got = arrays[chunked].boxes_xyxy[i]
            np.testing.assert_allclose(np.r_[got[:2], got[2:] - got[:2]], box_xywh, atol=1e-3,
                                       err_msg=f"track {i} frame {t}")
            assert abs(arrays[chunked].scores[i] - score) < 1e-4
        np.testing.assert_allclose(arrays[chunked].boxes_xyxy, arrays[serial].boxes_xyxy, atol=1e-3)
        assert [s.frame_index for s in states[chunked]] == [t] * n
    assert torch.get_num_threads() == threads  # the process default was put back after starting the workers
    assert {chunked._chunk_pool.submit(torch.get_num_threads).result() for _ in range(6)} == {1}
