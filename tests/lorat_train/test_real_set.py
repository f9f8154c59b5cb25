"""The real-video evaluation set's annotations (bench/data/real): well formed, inside the frames, checked.

The videos themselves come from Debian's opencv-doc at run time (bench/real_set.py); the loader is tested
on a small video written here.
"""

from __future__ import annotations

import numpy as np

from bench.real_set import DATA, load_sequence, load_spec, read_annotations

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


def test_sequences_load_with_gt_on_annotated_frames_only(tmp_path, monkeypatch):
    """The loader on a small video laid out like the package cache (the real videos are not in CI)."""
    import json

    import cv2

    from bench import real_set

    video_dir = tmp_path / "cache" / real_set.VIDEO_DIR
    video_dir.mkdir(parents=True)
    writer = cv2.VideoWriter(str(video_dir / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(10):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:, :, 2] = 200  # red in BGR: the loader must hand the tracker RGB
        frame[10:30, 5 + 3 * i:25 + 3 * i] = 255
        writer.write(frame)
    writer.release()
    data = tmp_path / "data"
    data.mkdir()
    (data / "sequences.json").write_text(json.dumps({"sequences": [
        {"name": "clip", "video": "clip.avi", "first": 2, "last": 7, "every": 5, "propose": "manual"}]}))
    (data / "clip.txt").write_text("2,11,10,20,20\n7,26,10,20,20\n")
    monkeypatch.setenv("LORAT_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(real_set, "DATA", data)
    real_set._read.cache_clear()
    try:
        seq = load_sequence("clip")
    finally:
        real_set._read.cache_clear()
    assert len(seq.frames) == 6 and seq.frames[0].shape == (48, 64, 3)
    assert seq.frames[0][40, 2, 0] > 150 and seq.frames[0][40, 2, 2] < 80  # RGB
    assert seq.annotated.tolist() == [True, False, False, False, False, True]
    assert np.isnan(seq.boxes[1:5]).all() and seq.boxes[5].tolist() == [26, 10, 20, 20]
