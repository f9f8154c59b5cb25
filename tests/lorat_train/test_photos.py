"""Photo clips (lorat_train.photos): real-photo training sequences, their pool, and the trainer hook."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lorat_train.default_real import build_source, register
from lorat_train.photos import PhotoPool, generate_photo_sequence, load_library, write_held_out


@pytest.fixture
def photo_root(tmp_path):
    """A few 'photos': smooth colour fields with structure, written as JPEG/PNG like the packages'."""
    rng = np.random.default_rng(0)
    for i in range(4):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = cv2.resize(small, (320, 240), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(tmp_path / f"p{i}.{'jpg' if i % 2 else 'png'}"), img)
    (tmp_path / "notes.txt").write_text("not a photo")
    return str(tmp_path)


def test_sequence_boxes_follow_the_pasted_object(photo_root):
    library = load_library(photo_root)
    assert len(library) == 4
    for seed in range(6):
        seq = generate_photo_sequence(np.random.default_rng(seed), library, 12)
        h, w = seq.frames[0].shape[:2]
        assert len(seq.frames) == 12 and seq.boxes.shape == (12, 4)
        assert all(f.shape == (h, w, 3) and f.dtype == np.uint8 for f in seq.frames)
        ok = np.all(np.isfinite(seq.boxes), axis=1)
        assert ok[0]
        b = seq.boxes[ok]
        assert np.all(b[:, 2:] >= 4) and np.all(b[:, 0] >= 0) and np.all(b[:, 0] + b[:, 2] <= w + 1e-6)
        assert np.all(b[:, 1] + b[:, 3] <= h + 1e-6)
        # smooth motion: consecutive visible boxes overlap or stay close (no teleporting labels)
        centres = b[:, :2] + b[:, 2:] / 2
        assert np.all(np.linalg.norm(np.diff(centres, axis=0), axis=1) < 0.2 * np.hypot(w, h))
    # deterministic in the generator's seed
    a = generate_photo_sequence(np.random.default_rng(5), library, 6)
    b = generate_photo_sequence(np.random.default_rng(5), library, 6)
    assert np.array_equal(a.frames[3], b.frames[3]) and np.array_equal(a.boxes, b.boxes, equal_nan=True)


def test_held_targets_stay_nearly_put_and_hold_zero_changes_nothing(photo_root):
    library = load_library(photo_root)
    for seed in range(4):
        seq = generate_photo_sequence(np.random.default_rng(seed), library, 16, hold=1.0)
        h, w = seq.frames[0].shape[:2]
        ok = np.all(np.isfinite(seq.boxes), axis=1)
        assert ok.all()  # a held target stays in view
        b = seq.boxes
        centres = b[:, :2] + b[:, 2:] / 2
        # slow drift + jitter only: over 16 frames the centre stays within a fifth of the frame diagonal
        assert np.max(np.linalg.norm(centres - centres[0], axis=1)) < 0.2 * np.hypot(w, h)
        assert np.max(b[:, 2] * b[:, 3]) / np.min(b[:, 2] * b[:, 3]) < 3.0  # mild scale change
    # a target that is part of a bigger pasted thing: the box is the part, inside what was pasted
    for seed in range(4):
        seq = generate_photo_sequence(np.random.default_rng(seed), library, 4, hold=1.0, part=1.0)
        plain = generate_photo_sequence(np.random.default_rng(seed), library, 4, hold=1.0)
        x, y, bw, bh = seq.boxes[0]
        assert bw >= 4 and bh >= 4
        changed = np.any(seq.frames[0] != plain.frames[0], axis=2)  # where the two clips' pastes differ
        ys, xs = np.nonzero(changed)
        assert xs.min() <= x + 1 and ys.min() <= y + 1
    # hold=0 draws nothing extra from the generator: clips of earlier runs stay what they were
    a = generate_photo_sequence(np.random.default_rng(3), library, 6)
    b = generate_photo_sequence(np.random.default_rng(3), library, 6, hold=0.0)
    assert np.array_equal(a.frames[5], b.frames[5])


def test_pool_is_a_function_of_the_step(photo_root, make_config):
    source = make_config(data={"sources": [{"type": "photos", "root": photo_root, "pool_size": 3,
                                            "num_frames": 5, "refresh_every": 2}]}).data.sources[0]
    one, two = PhotoPool(source, 7), PhotoPool(source, 7)
    for step in (0, 1, 2, 9):
        one.get(1, step)
    assert np.array_equal(one.get(1, 9).frames[2], two.get(1, 9).frames[2])  # no history needed (resume)
    assert one.sequence_id(0, 0) != one.sequence_id(0, 6)
    assert isinstance(build_source(source, 7), PhotoPool)


def test_trainer_draws_photo_pairs(photo_root, make_config):
    from lorat_train.trainer import Trainer

    register()
    config = make_config(mode="full", data={
        "sources": [{"type": "photos", "root": photo_root, "weight": 3, "pool_size": 3, "num_frames": 6},
                    {"type": "synthetic", "pool_size": 2, "num_frames": 6, "options": {"size": [96, 80]}}],
        "augment": {"flip": 0.5, "color_jitter": 0.4, "deit3": False},
        "search_jitter": {"scale": 0.25, "center": 1.5}})
    trainer = Trainer(config)
    batch = trainer.sampler.batch(0, 4)
    assert batch.search.shape == (4, 3, 64, 64) and batch.template.shape == (4, 3, 32, 32)
    boxes = batch.target_boxes.numpy()
    assert np.all(boxes[:, 2:] > boxes[:, :2]) and np.all((boxes >= 0) & (boxes <= 1))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    logs = trainer.train_step(batch)
    assert np.isfinite(logs["loss"])
    assert any(not np.allclose(a, p.detach()) for a, p in zip(before, trainer.model.parameters()))


def test_held_out_clips_read_back_as_sequence_folders(photo_root, tmp_path):
    from lorat_infer.eval.datasets import read_dataset

    write_held_out(photo_root, str(tmp_path / "val"), seed=1, count=2, num_frames=5)
    seqs = read_dataset(tmp_path / "val")
    assert len(seqs) == 2 and len(seqs[0]) == 5
    assert np.all(np.isfinite(seqs[0].boxes[0]))
