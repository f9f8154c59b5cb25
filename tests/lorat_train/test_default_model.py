"""The packaged default model: present, small, loads with no arguments, and really tracks."""

from __future__ import annotations

import dataclasses

import numpy as np

from lorat_infer import load_model
from lorat_infer.eval.synthetic import generate_sequence
from lorat_infer.loading import default_model_path
from lorat_train.evaluate import evaluate_auc, initial_box_auc


def test_default_model_is_packaged_small_and_loads():
    path = default_model_path()
    assert path.is_file(), f"missing {path}: run `make default-model`"
    assert path.stat().st_size <= 20 * 2**20
    model = load_model()
    assert not model.training
    assert (path.parent / "MODEL_CARD.md").is_file() and (path.parent / "training-config.yaml").is_file()
    # the synthetic-only model of stages 1-2: stage 3's start and bench/eval_default.py's "previous model"
    previous = path.parent / "lorat-synthetic.safetensors"
    assert previous.is_file() and previous.stat().st_size <= 20 * 2**20
    # same architecture; the window weight and size learning rate may differ (the default ships its own,
    # tuned off the real set by lorat_train.tune_window)
    assert dataclasses.replace(load_model(previous).config, window_weight=0.0, size_lr=1.0) == dataclasses.replace(
        model.config, window_weight=0.0, size_lr=1.0)


def test_model_card_names_its_data_and_limits():
    card = (default_model_path().parent / "MODEL_CARD.md").read_text()
    for needed in ("licen", "not a substitute", "make default-model", "bench/eval_default.py"):
        assert needed in card, needed


def test_default_model_tracks_unseen_synthetic_sequences():
    # seeds never used in training; both domains, with occlusion, distractor and scale change
    sequences = [generate_sequence(9_100_001, 30), generate_sequence(9_100_002, 30, domain="stripes", speed=0.02)]
    model = load_model()
    auc = evaluate_auc(model, sequences)
    assert auc > 0.5, auc
    assert auc > initial_box_auc(sequences) + 0.15
    assert np.isfinite(auc)
