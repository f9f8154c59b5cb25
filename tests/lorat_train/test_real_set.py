"""The real-video evaluation set's annotations (bench/data/real): well formed, inside the frames, checked.

The videos themselves come from Debian's opencv-doc at run time (bench/real_set.py); when they are in the
cache the boxes are also checked against the decoded frames.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.real_set import DATA, VIDEO_DIR, cache_dir, load_sequence, load_spec, read_annotations

SIZES = {"vtest.avi": (768, 576), "Megamind.avi": (720, 528)}


def test_annotations_are_well_formed():
    spec = load_spec()
    assert len(spec) >= 4 and {s["video"] for s in spec.values()} == set(SIZES)
    for name, s in spec.items():
        frames, boxes = read_annotations(DATA / f"{name}.txt")
        assert frames[0] == s["first"] and frames[-1] <= s["last"], name
        assert frames == list(range(s["first"], frames[-1] + 1, s["every"])), name  # every Nth frame, no gaps
        w, h = SIZES[s["video"]]
        assert np.all(boxes[:, 2:] >= 10), name
        assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 0] + boxes[:, 2] <= w), name
        assert np.all(boxes[:, 1] >= 0) and np.all(boxes[:, 1] + boxes[:, 3] <= h), name


def test_sequences_load_with_gt_on_annotated_frames_only():
    spec = load_spec()
    name = next(iter(spec))

    if not (cache_dir() / VIDEO_DIR / spec[name]["video"]).is_file():
        pytest.skip("opencv-doc videos not gathered (python -m lorat_train.gather)")
    seq = load_sequence(name)
    assert len(seq.frames) == spec[name]["last"] - spec[name]["first"] + 1
    assert seq.frames[0].shape == (SIZES[spec[name]["video"]][1], SIZES[spec[name]["video"]][0], 3)
    assert seq.annotated[0] and seq.annotated.sum() == len(read_annotations(DATA / f"{name}.txt")[0])
    assert np.isnan(seq.boxes[~seq.annotated]).all()
